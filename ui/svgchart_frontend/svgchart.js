// Platoscope's small fixed-size charts (ui/svgchart.py): a Streamlit components-v2 module, mounted in the app's own
// page (no iframe, no network, no build step) and drawn as SVG from what Python computed: a page does not load
// plotly's 4.7 MB bundle for a matrix of a few cells or a handful of bars, nor an iframe document per chart.
// Every string (names, values, hover texts) is set as text, never as markup.
//   kind "heatmap": each cell's colour, printed value and hover text; a click on a cell sends the trigger "cell"
//                   ({kind: "cell", row, col, data_key}; a trigger: seen in one script run).
//   kind "bars":    grouped bars with error bars (mean +- std), one colour per series, hover texts, a dashed line.
// The chart's root (.ps-svgchart) gets data-svgchart-painted="<kind>" once drawn (the benchmark and the browser
// tests wait for it).
export default function (component) {
  const NS = "http://www.w3.org/2000/svg";
  const { parentElement, data, setTriggerValue } = component;
  let root = parentElement.querySelector(":scope > .ps-svgchart");
  if (!root) {
    root = document.createElement("div");
    root.className = "ps-svgchart";
    root.innerHTML = '<div class="ps-svgchart-title"></div><div class="ps-svgchart-stage"><svg></svg><div class="ps-svgchart-tip"></div></div>';
    parentElement.appendChild(root);
  }
  const svg = root.querySelector("svg"), tip = root.querySelector(".ps-svgchart-tip");
  const stage = root.querySelector(".ps-svgchart-stage");
  const args = (typeof data === "string" ? JSON.parse(data) : data) || {};   // ui/svgchart.py sends JSON text
  const width = () => Math.max(320, (root.clientWidth || parentElement.clientWidth || 640) | 0);
  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = String(text);   // text, never markup
    return e;
  }
  function ink(hex) {  // dark text on light cells, white on dark ones
    if (!hex) return "#262730";
    const v = parseInt(hex.slice(1), 16), r = (v >> 16) & 255, g = (v >> 8) & 255, b = v & 255;
    return (0.299 * r + 0.587 * g + 0.114 * b) > 140 ? "#262730" : "#ffffff";
  }
  const measure = (function () {
    const c = document.createElement("canvas").getContext("2d");
    return function (s, px) { c.font = px + "px 'Source Sans Pro', sans-serif"; return c.measureText(String(s)).width; };
  })();

  function showTip(text, ev) {
    tip.textContent = text;
    tip.style.display = "block";
    const box = stage.getBoundingClientRect();
    let x = ev.clientX - box.left + 12, y = ev.clientY - box.top + 12;
    if (x + tip.offsetWidth > stage.clientWidth) x = Math.max(0, ev.clientX - box.left - tip.offsetWidth - 12);
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }
  function hideTip() { tip.style.display = "none"; }

  function draw() {
    if (!args) return;
    if (args.kind === "bars") return drawBars();
    const xs = args.x || [], ys = args.y || [], colours = args.colours || [], texts = args.text || [];
    const hover = args.hover || [];
    const nx = Math.max(1, xs.length), ny = Math.max(1, ys.length);
    const W = Math.max(320, width());
    const H = Math.max(200, (args.height || 420) - 34);
    const fs = 13;
    const left = Math.min(W * 0.35, 12 + Math.max(0, ...ys.map((s) => measure(s, fs)))) + (args.y_title ? 20 : 0);
    const xw = Math.max(0, ...xs.map((s) => measure(s, fs)));
    const barW = 70, right = barW + 10;
    let cell = Math.min((W - left - right) / nx, 160);
    const rotate = xw + 8 > cell;
    const bottom = (rotate ? Math.min(xw * 0.72 + 14, 160) : 22) + (args.x_title ? 20 : 0);
    cell = Math.max(8, Math.min(cell, (H - bottom - 8) / ny));
    const gw = cell * nx, gh = cell * ny, top = 4;
    svg.textContent = "";
    svg.setAttribute("width", W); svg.setAttribute("height", top + gh + bottom);
    const grid = el("g", { transform: `translate(${left},${top})` });
    for (let i = 0; i < ys.length; i++) {
      for (let j = 0; j < xs.length; j++) {
        const c = (colours[i] || [])[j];
        const r = el("rect", { class: "cell", x: j * cell, y: i * cell, width: cell - 1, height: cell - 1,
                               fill: c || "#eceef3", "data-row": i, "data-col": j });
        const h = (hover[i] || [])[j] || "";
        r.addEventListener("mousemove", (ev) => showTip(h, ev));
        r.addEventListener("mouseleave", hideTip);
        r.addEventListener("click", () => {
          setTriggerValue("cell", { kind: "cell", row: i, col: j, data_key: args.data_key });
        });
        grid.appendChild(r);
        const t = (texts[i] || [])[j];
        if (t && cell >= 22) {
          grid.appendChild(el("text", { x: j * cell + cell / 2, y: i * cell + cell / 2, "text-anchor": "middle",
                                        "dominant-baseline": "central", fill: ink(c), "font-size": Math.min(14, cell / 3.2),
                                        "pointer-events": "none" }, t));
        }
      }
    }
    for (let i = 0; i < ys.length; i++) {
      grid.appendChild(el("text", { x: -6, y: i * cell + cell / 2, "text-anchor": "end", "dominant-baseline": "central",
                                    "font-size": fs }, ys[i]));
    }
    for (let j = 0; j < xs.length; j++) {
      const x = j * cell + cell / 2, y = gh + 14;
      grid.appendChild(rotate
        ? el("text", { x: x, y: gh + 8, "text-anchor": "end", "font-size": fs, transform: `rotate(-45 ${x} ${gh + 8})` }, xs[j])
        : el("text", { x: x, y: y, "text-anchor": "middle", "font-size": fs }, xs[j]));
    }
    if (args.x_title) grid.appendChild(el("text", { x: gw / 2, y: gh + bottom - 6, "text-anchor": "middle", "font-size": fs, fill: "#6b6f7b" }, args.x_title));
    if (args.y_title) grid.appendChild(el("text", { x: -left + 12, y: gh / 2, "text-anchor": "middle", "font-size": fs, fill: "#6b6f7b",
                                                    transform: `rotate(-90 ${-left + 12} ${gh / 2})` }, args.y_title));
    svg.appendChild(grid);
    // the colour bar: the ramp Python sent, top = its high end
    const bar = args.colorbar || {};
    const stops = bar.stops || [];
    if (stops.length) {
      const rampId = "ps-ramp-" + Math.random().toString(36).slice(2);
      const bx = left + gw + 16, bh = Math.max(60, gh);
      const defs = el("defs", {}), grad = el("linearGradient", { id: rampId, x1: 0, y1: 1, x2: 0, y2: 0 });
      stops.forEach((s) => grad.appendChild(el("stop", { offset: s[0], "stop-color": s[1] })));
      defs.appendChild(grad); svg.appendChild(defs);
      svg.appendChild(el("rect", { x: bx, y: top, width: 14, height: bh, fill: `url(#${rampId})` }));
      svg.appendChild(el("text", { x: bx + 18, y: top + 10, "font-size": 11 }, bar.high === undefined ? "" : bar.high));
      svg.appendChild(el("text", { x: bx + 18, y: top + bh, "font-size": 11 }, bar.low === undefined ? "" : bar.low));
      if (bar.title) svg.appendChild(el("text", { x: bx + 18, y: top + bh / 2, "font-size": 11, fill: "#6b6f7b" }, bar.title));
    }
    painted();
  }

  function painted() {
    root.dataset.svgchartPainted = args.kind;   // (the benchmark and the browser tests wait for this)
  }

  function drawBars() {
    const cats = args.categories || [], series = args.series || [];
    const W = Math.max(320, width());
    const H = Math.max(200, (args.height || 420) - 34);
    const fs = 13, ticks = args.ticks || [], lo = args.y_range[0], hi = args.y_range[1];
    const left = 14 + Math.max(0, ...ticks.map((t) => measure(t[1], 11))) + (args.y_title ? 20 : 0);
    const legendH = series.length > 1 ? 22 : 0;
    const cw = (W - left - 10) / Math.max(1, cats.length);
    const xw = Math.max(0, ...cats.map((s) => measure(s, fs)));
    const rotate = xw + 8 > cw;
    const bottom = (rotate ? Math.min(xw * 0.72 + 14, 160) : 22);
    const gh = H - bottom - legendH - 8, top = 4 + legendH;
    const y = (v) => top + gh - (Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo || 1) * gh;
    svg.textContent = "";
    svg.setAttribute("width", W); svg.setAttribute("height", top + gh + bottom);
    series.forEach((s, k) => {   // the legend, on one line
      const x = left + k * Math.max(140, (W - left) / series.length);
      svg.appendChild(el("rect", { x: x, y: 4, width: 12, height: 12, fill: s.colour }));
      svg.appendChild(el("text", { x: x + 16, y: 14, "font-size": 12 }, s.name));
    });
    ticks.forEach((t) => {
      svg.appendChild(el("line", { x1: left, x2: W - 10, y1: y(t[0]), y2: y(t[0]), stroke: "#eceef3" }));
      svg.appendChild(el("text", { x: left - 6, y: y(t[0]), "text-anchor": "end", "dominant-baseline": "central",
                                   "font-size": 11, fill: "#6b6f7b" }, t[1]));
    });
    svg.appendChild(el("line", { x1: left, x2: W - 10, y1: y(Math.max(lo, 0)), y2: y(Math.max(lo, 0)), stroke: "#9ea2ad" }));
    const bw = cw * 0.8 / Math.max(1, series.length);
    series.forEach((s, k) => {
      (s.values || []).forEach((v, j) => {
        if (v === null || v === undefined) return;
        const x = left + j * cw + cw * 0.1 + k * bw, base = y(Math.max(lo, 0)), yv = y(v);
        const r = el("rect", { class: "bar", x: x + 1, y: Math.min(base, yv), width: Math.max(1, bw - 2),
                               height: Math.max(1, Math.abs(base - yv)), fill: s.colour });
        const h = (s.hover || [])[j] || "";
        r.addEventListener("mousemove", (ev) => showTip(h, ev));
        r.addEventListener("mouseleave", hideTip);
        svg.appendChild(r);
        const e = (s.errors || [])[j];
        if (e) {
          const cx = x + bw / 2;
          svg.appendChild(el("line", { x1: cx, x2: cx, y1: y(v - e), y2: y(v + e), stroke: "#262730", "pointer-events": "none" }));
          svg.appendChild(el("line", { x1: cx - 4, x2: cx + 4, y1: y(v + e), y2: y(v + e), stroke: "#262730", "pointer-events": "none" }));
          svg.appendChild(el("line", { x1: cx - 4, x2: cx + 4, y1: y(v - e), y2: y(v - e), stroke: "#262730", "pointer-events": "none" }));
        }
      });
    });
    if (args.hline) {   // a dashed reference line (e.g. chance) and its label, as text
      const yl = y(args.hline[0]);
      svg.appendChild(el("line", { class: "hline", x1: left, x2: W - 10, y1: yl, y2: yl, stroke: "#7f7f7f",
                                   "stroke-dasharray": "6 4", "pointer-events": "none" }));
      svg.appendChild(el("text", { x: W - 14, y: yl - 4, "text-anchor": "end", "font-size": 11, fill: "#262730",
                                   stroke: "#ffffff", "stroke-width": 3, "paint-order": "stroke" }, args.hline[1]));
    }
    cats.forEach((c, j) => {
      const x = left + j * cw + cw / 2, yb = top + gh + 8;
      svg.appendChild(rotate
        ? el("text", { x: x, y: yb, "text-anchor": "end", "font-size": fs, transform: `rotate(-35 ${x} ${yb})` }, c)
        : el("text", { x: x, y: yb + 8, "text-anchor": "middle", "font-size": fs }, c));
    });
    if (args.y_title) svg.appendChild(el("text", { x: 12, y: top + gh / 2, "text-anchor": "middle", "font-size": fs, fill: "#6b6f7b",
                                                   transform: `rotate(-90 12 ${top + gh / 2})` }, args.y_title));
    painted();
  }

  root.querySelector(".ps-svgchart-title").textContent = String(args.title || "");
  let lastW = width();
  draw();
  const observer = new ResizeObserver(() => { const w = width(); if (w !== lastW) { lastW = w; draw(); } });
  observer.observe(root);
  return () => observer.disconnect();
}
