// Platoscope's million-point map (ui/maps.py): a Streamlit components-v2 module mounted in the app's own page (no
// iframe, no network, no build step, no WebGL). Points are splatted into a canvas ImageData buffer (about 10 ms per
// million points in V8), so it draws in headless chromium with --disable-gpu too. Pan (drag in pan mode), zoom
// (wheel), lasso / box selection, click on a point. The selection goes back to Python as the state "selection": a
// polygon in data coordinates (or a point and a radius); Python lists the items. Hovering a point shows its caption
// and id (sent once as UTF-8, one line per point; set as text, never as markup).
//
// Python sends one binary payload (ui.maps.map_payload): "PSMAP1", the header's length (uint32, little-endian), the
// header (UTF-8 JSON: title, axes, palette, legend, bbox, data_key, height, select, and the byte lengths of the
// parts), then the coordinates (float32 x, y per point), the colour codes (uint8 per point, optional) and the hover
// lines (optional). The map's root (.ps-map) carries data-painted (the point count, once drawn), data-draw-ms and
// data-hovered (the benchmark and the browser tests read them). A rerun mounts again on the same root: the map keeps
// its view and selection while the data_key stays.
const TEMPLATE = `<div class="ps-map-bar">
  <span class="ps-map-title"></span>
  <button class="ps-map-t-lasso on" title="draw a lasso: the items inside it are listed below">Lasso</button>
  <button class="ps-map-t-box" title="drag a box">Box</button>
  <button class="ps-map-t-pan" title="drag to pan (the wheel zooms in every mode)">Pan</button>
  <button class="ps-map-t-reset" title="fit all points; clears the selection">Reset</button>
  <span class="ps-map-status"></span>
</div>
<div class="ps-map-wrap">
  <div class="ps-map-stage"><canvas class="ps-map-plot"></canvas><canvas class="ps-map-overlay"></canvas><div class="ps-map-tip"></div></div>
  <div class="ps-map-legend"></div>
</div>
<div class="ps-map-axes"></div>`;

function decode(data) {
  const u8 = data instanceof Uint8Array ? data : new Uint8Array(data instanceof ArrayBuffer ? data : data.buffer);
  const magic = new TextDecoder("ascii").decode(u8.subarray(0, 6));
  if (magic !== "PSMAP1") throw new Error("platoscope map: not a map payload");
  const hlen = new DataView(u8.buffer, u8.byteOffset + 6, 4).getUint32(0, true);
  const args = JSON.parse(new TextDecoder("utf-8").decode(u8.subarray(10, 10 + hlen)));
  let at = 10 + hlen;
  const part = (len) => { const p = len ? u8.subarray(at, at + len) : null; at += len || 0; return p; };
  args.coords = part(args.coords_bytes);
  args.codes = part(args.codes_bytes);
  args.hover = part(args.hover_bytes);
  return args;
}

function build(root) {
  const $ = (name) => root.querySelector(".ps-map-" + name);
  const plot = $("plot"), overlay = $("overlay");
  const ctx = plot.getContext("2d"), octx = overlay.getContext("2d");
  const stage = $("stage"), statusEl = $("status");
  let n = 0, xs = null, ys = null, codes = null, pal32 = new Uint32Array(256), dim32 = new Uint32Array(256);
  let dataKey = null, view = null, bbox = null, tool = "lasso", sel = null, seq = 0, height = 620;
  let img = null, buf = null, drawPending = false, firstPaint = true;
  let hoverLines = null, selectable = true, hoverAt = null, hoverPending = false, hovered = -1;
  const tip = $("tip");
  const state = { setStateValue: null };   // the latest mount's setStateValue (a rerun mounts again)
  // the selection goes back as the component's state "selection" (kept across reruns, like a widget's value)
  function send(value) { seq += 1; value.seq = seq; value.data_key = dataKey; if (state.setStateValue) state.setStateValue("selection", value); }

  function hex32(h, alpha) {  // "#rrggbb" -> little-endian ABGR uint32 for ImageData
    const v = parseInt(h.slice(1), 16);
    return ((alpha & 255) << 24) | ((v & 255) << 16) | (((v >> 8) & 255) << 8) | ((v >> 16) & 255);
  }
  function fade(h) {  // the colour mixed 80 % toward white: unselected points
    const v = parseInt(h.slice(1), 16), r = (v >> 16) & 255, g = (v >> 8) & 255, b = v & 255;
    const m = (c) => Math.round(c + (255 - c) * 0.8);
    return (255 << 24) | (m(b) << 16) | (m(g) << 8) | m(r);
  }

  function fit() {
    const w = plot.width, h = plot.height, pad = 0.04;
    const dx = Math.max(bbox[2] - bbox[0], 1e-12), dy = Math.max(bbox[3] - bbox[1], 1e-12);
    view = { cx: (bbox[0] + bbox[2]) / 2, cy: (bbox[1] + bbox[3]) / 2, k: Math.min(w / dx, h / dy) * (1 - 2 * pad) };
  }
  function toData(px, py) { return [view.cx + (px - plot.width / 2) / view.k, view.cy - (py - plot.height / 2) / view.k]; }

  function resize() {
    const w = Math.max(200, stage.clientWidth | 0), h = height;
    if (plot.width !== w || plot.height !== h) {
      plot.width = overlay.width = w; plot.height = overlay.height = h;
      img = ctx.createImageData(w, h); buf = new Uint32Array(img.data.buffer);
      if (bbox) fit();
    }
  }

  function draw() {
    drawPending = false;
    if (!buf || !view) return;
    const t0 = performance.now();
    const w = plot.width, h = plot.height, k = view.k, ox = w / 2 - view.cx * k, oy = h / 2 + view.cy * k;
    buf.fill(0xffffffff);
    const big = n <= 200000;            // 2 x 2 pixels per point below 200k points, 1 pixel above
    const hasSel = sel !== null;
    for (let i = 0; i < n; i++) {
      const px = (xs[i] * k + ox) | 0, py = (oy - ys[i] * k) | 0;
      if (px < 0 || py < 0 || px >= w - 1 || py >= h - 1) continue;
      const c = hasSel && !sel[i] ? dim32[codes[i]] : pal32[codes[i]];
      const o = py * w + px;
      buf[o] = c;
      if (big) { buf[o + 1] = c; buf[o + w] = c; buf[o + w + 1] = c; }
    }
    if (hasSel) {                       // selected points on top
      for (let i = 0; i < n; i++) {
        if (!sel[i]) continue;
        const px = (xs[i] * k + ox) | 0, py = (oy - ys[i] * k) | 0;
        if (px < 0 || py < 0 || px >= w - 1 || py >= h - 1) continue;
        const c = pal32[codes[i]], o = py * w + px;
        buf[o] = c; if (big) { buf[o + 1] = c; buf[o + w] = c; buf[o + w + 1] = c; }
      }
    }
    ctx.putImageData(img, 0, 0);
    const ms = performance.now() - t0;
    root.dataset.drawMs = ms.toFixed(1);
    if (firstPaint) {
      firstPaint = false;
      root.dataset.painted = String(n);
      root.dataset.firstPaintAt = String(performance.timeOrigin + performance.now());
    }
    statusEl.textContent = n.toLocaleString() + " points" + (hasSel ? " \u00b7 " + selCount.toLocaleString() + " selected" : "") + " \u00b7 drawn in " + ms.toFixed(0) + " ms";
  }
  function requestDraw() { if (!drawPending) { drawPending = true; requestAnimationFrame(draw); } }

  let selCount = 0;
  function selectPolygon(poly) {        // even-odd rule, bounding box first (the same rule Python applies)
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const [x, y] of poly) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
    sel = new Uint8Array(n); selCount = 0;
    const m = poly.length;
    for (let i = 0; i < n; i++) {
      const x = xs[i], y = ys[i];
      if (x < x0 || x > x1 || y < y0 || y > y1) continue;
      let inside = false;
      for (let a = 0, b = m - 1; a < m; b = a++) {
        const ya = poly[a][1], yb = poly[b][1];
        if ((ya > y) !== (yb > y)) {
          const xc = poly[a][0] + (y - ya) * (poly[b][0] - poly[a][0]) / (yb - ya);
          if (x < xc) inside = !inside;
        }
      }
      if (inside) { sel[i] = 1; selCount++; }
    }
  }

  // -- hover: the nearest point within 6 pixels shows its caption and id (user text: textContent only) ----------
  function hideTip() { tip.style.display = "none"; hovered = -1; root.dataset.hovered = ""; }
  function hover() {
    hoverPending = false;
    if (!hoverLines || !view || !hoverAt || drag) { hideTip(); return; }
    const [mx, my] = hoverAt, w = plot.width, h = plot.height, k = view.k;
    const ox = w / 2 - view.cx * k, oy = h / 2 + view.cy * k, r2 = 36;
    let best = -1, bestD = r2;
    for (let i = 0; i < n; i++) {
      const dx = xs[i] * k + ox - mx, dy = oy - ys[i] * k - my, d = dx * dx + dy * dy;
      if (d <= bestD) { bestD = d; best = i; }
    }
    if (best < 0) { hideTip(); return; }
    if (best !== hovered) {
      const line = hoverLines[best] || "", cut = line.indexOf("\x1f");
      const id = cut >= 0 ? line.slice(0, cut) : "", text = cut >= 0 ? line.slice(cut + 1) : line;
      tip.textContent = "";
      const head = document.createElement("b"); head.textContent = text;
      tip.appendChild(head);
      if (id && id !== text) tip.appendChild(document.createTextNode("\nid: " + id));
      hovered = best; root.dataset.hovered = String(best);
    }
    tip.style.display = "block";
    const left = Math.min(mx + 12, Math.max(0, w - tip.offsetWidth - 4)), top = my + 14 + tip.offsetHeight > h ? my - tip.offsetHeight - 8 : my + 14;
    tip.style.left = left + "px"; tip.style.top = Math.max(0, top) + "px";
  }
  overlay.addEventListener("mousemove", (e) => { hoverAt = pos(e); if (!hoverPending) { hoverPending = true; requestAnimationFrame(hover); } });
  overlay.addEventListener("mouseleave", () => { hoverAt = null; hideTip(); });

  // -- interaction ---------------------------------------------------------------------------
  let drag = null;
  function setTool(t) { tool = t; for (const id of ["lasso", "box", "pan"]) $("t-" + id).classList.toggle("on", id === t); }
  for (const id of ["lasso", "box", "pan"]) $("t-" + id).onclick = () => setTool(id);
  $("t-reset").onclick = () => { if (bbox) { fit(); sel = null; requestDraw(); send({ kind: "clear" }); } };
  function pos(e) { const r = overlay.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
  overlay.addEventListener("mousedown", (e) => { if (!view) return; const p = pos(e); drag = { start: p, last: p, path: [p], moved: false, view: Object.assign({}, view) }; });
  // window listeners: removed by the first event after the map left the page (the mount's cleanup runs on every
  // rerun too, while the map, its view and its selection stay)
  function onWindow(type, handler) {
    const wrapped = (e) => { if (!root.isConnected) { window.removeEventListener(type, wrapped); return; } handler(e); };
    window.addEventListener(type, wrapped);
  }
  onWindow("mousemove", (e) => {
    if (!drag) return;
    const p = pos(e), d = Math.hypot(p[0] - drag.start[0], p[1] - drag.start[1]);
    if (d > 3) drag.moved = true;
    if (tool === "pan") {
      view.cx = drag.view.cx - (p[0] - drag.start[0]) / view.k; view.cy = drag.view.cy + (p[1] - drag.start[1]) / view.k; requestDraw();
    } else {
      const q = drag.path[drag.path.length - 1];
      if (Math.hypot(p[0] - q[0], p[1] - q[1]) >= 3) drag.path.push(p);
      drag.last = p;
      octx.clearRect(0, 0, overlay.width, overlay.height);
      octx.strokeStyle = "#222"; octx.setLineDash([4, 3]); octx.lineWidth = 1; octx.fillStyle = "rgba(76,95,213,0.08)";
      octx.beginPath();
      if (tool === "box") { octx.rect(drag.start[0], drag.start[1], p[0] - drag.start[0], p[1] - drag.start[1]); }
      else { drag.path.forEach((v, i) => i ? octx.lineTo(v[0], v[1]) : octx.moveTo(v[0], v[1])); octx.closePath(); }
      octx.fill(); octx.stroke();
    }
  });
  onWindow("mouseup", (e) => {
    if (!drag) return;
    const d = drag; drag = null;
    octx.clearRect(0, 0, overlay.width, overlay.height);
    if (!d.moved) {                     // a click: the nearest point within 6 pixels
      if (tool === "pan" || !selectable) return;
      const [x, y] = toData(d.start[0], d.start[1]);
      send({ kind: "point", x: x, y: y, radius: 6 / view.k });
      return;
    }
    if (tool === "pan") return;
    let poly;
    if (tool === "box") {
      const a = toData(d.start[0], d.start[1]), b = toData(d.last[0], d.last[1]);
      poly = [[a[0], a[1]], [b[0], a[1]], [b[0], b[1]], [a[0], b[1]]];
    } else {
      let path = d.path;
      if (path.length > 400) { const step = path.length / 400; path = Array.from({ length: 400 }, (_, i) => path[Math.floor(i * step)]); }
      poly = path.map((p) => toData(p[0], p[1]));
    }
    if (poly.length < 3) return;
    selectPolygon(poly); requestDraw();
    send({ kind: tool, polygon: poly });
  });
  overlay.addEventListener("wheel", (e) => {
    if (!view) return;
    e.preventDefault();
    const p = pos(e), before = toData(p[0], p[1]);
    view.k *= Math.exp(-e.deltaY * 0.0015);
    const after = toData(p[0], p[1]);
    view.cx += before[0] - after[0]; view.cy += before[1] - after[1];
    requestDraw();
  }, { passive: false });
  overlay.addEventListener("dblclick", () => { if (bbox) { fit(); requestDraw(); } });

  // -- one mount: the arguments Python sent ---------------------------------------------------
  function legend(items) {
    const el = $("legend");
    el.textContent = "";
    for (const [name, colour] of items) {  // names are user text: textContent, never markup
      const row = document.createElement("div"), sw = document.createElement("span"), label = document.createElement("span");
      sw.className = "sw"; sw.style.background = /^#[0-9a-fA-F]{6}$/.test(colour) ? colour : "#999999";
      label.textContent = String(name); label.title = String(name);
      row.appendChild(sw); row.appendChild(label); el.appendChild(row);
    }
    el.style.display = items.length ? "block" : "none";
  }
  function render(args) {
    height = args.height || 620;
    $("title").textContent = String(args.title || "");
    $("axes").textContent = String(args.axes || "");
    const palette = args.palette || ["#4C5FD5"];
    for (let i = 0; i < 256; i++) { const c = palette[i % palette.length]; pal32[i] = hex32(c, 255); dim32[i] = fade(c); }
    legend(args.legend || []);
    selectable = args.select !== false;  // a map without selection (e.g. Similarity's side-by-side maps): pan only
    for (const id of ["lasso", "box"]) $("t-" + id).style.display = selectable ? "" : "none";
    if (!selectable && tool !== "pan") setTool("pan");
    resize();
    if (args.data_key !== dataKey) {
      const xy = new Float32Array(args.coords.slice().buffer);
      n = xy.length / 2; xs = new Float32Array(n); ys = new Float32Array(n);
      for (let i = 0; i < n; i++) { xs[i] = xy[2 * i]; ys[i] = xy[2 * i + 1]; }
      codes = args.codes ? args.codes.slice() : new Uint8Array(n);
      bbox = args.bbox; dataKey = args.data_key; sel = null; fit(); firstPaint = true; hideTip();
      hoverLines = args.hover ? new TextDecoder("utf-8").decode(args.hover).split("\n") : null;
    } else if (args.codes) {
      codes = args.codes.slice();
    }
    requestDraw();
  }
  // the stage's own size: a window resize, a narrower column, an expander opening
  new ResizeObserver(() => { resize(); requestDraw(); }).observe(stage);
  return { render: render, state: state };
}

export default function (component) {
  const { parentElement, data, setStateValue } = component;
  let root = parentElement.querySelector(":scope > .ps-map");
  if (!root) {
    root = document.createElement("div");
    root.className = "ps-map";
    root.innerHTML = TEMPLATE;            // the app's own markup; every user string is set as text later
    parentElement.appendChild(root);
    root._psMap = build(root);
  }
  root._psMap.state.setStateValue = setStateValue;
  root._psMap.render(decode(data));
}
