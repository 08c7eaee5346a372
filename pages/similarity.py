"""Similarity: the CKA heatmap over a dataset's spaces (and its companions), and layer-by-layer heatmaps."""
import re

import pandas as pd
import streamlit as st

from core.export import build_manifest
from core.similarity import MEASURES, layerwise_similarity, similarity_matrix
from ui import cached, data, jobs
from ui.maps import draw_map, pca_map_or_progress
from ui.svgchart import heatmap_args, heatmap_chart
from ui.plots import heatmap
from core.presets import SIMILARITY_FIELDS
from ui.presets import preset_control
from ui.widgets import export_controls, guard, page_header, sync_url, url_key
from ui.text import md, safe_figure

page_header("Similarity", "similarity",
            "How alike are the spaces? Linear CKA streams over rows (any n); every value can carry a "
            "permutation p-value.")

preset = preset_control("A", only=SIMILARITY_FIELDS)
ds = data.current_dataset()
if ds is None or len(ds.spaces) < 2:
    st.info("This view needs a dataset with at least two spaces: pick the demo or upload files in the sidebar.")
    st.stop()

MEASURE_LABELS = {
    "linear_cka": "Linear CKA", "debiased_cka": "Debiased CKA", "rbf_cka": "RBF CKA (n capped, seeded)",
    "mutual_knn": "Mutual k-NN", "cknna": "CKNNA", "svcca": "SVCCA (99 % variance, Raghu et al.)",
    "svcca_top10": "SVCCA (top-10 components, Platonic code)", "pwcca": "PWCCA",
    "procrustes": "Procrustes distance (0 = same shape)", "rsa": "RSA (Spearman, seeded sample)"}
measures = [m for m in MEASURE_LABELS if m in MEASURES]
names = ds.space_names
namespace = data.cache_namespace(ds)

VIEWS = ["All spaces", "Layer by layer"]
# one view at a time (in the URL): the layer-by-layer heatmap is computed only when it is opened
view = st.segmented_control("View", VIEWS, key=url_key("view", VIEWS[0], VIEWS), required=True,
                            label_visibility="collapsed")
sync_url(view=view)

if view == "All spaces":
    c1, c2, c3 = st.columns([2, 1, 1])
    measure = c1.selectbox("Measure", measures, format_func=MEASURE_LABELS.get,
                           key=url_key("measure", "linear_cka", measures))
    n_perm = c2.selectbox("Permutations (p-values)", [0, 20, 100], key=url_key("perm", 0, [0, 20, 100]))
    k = c3.number_input("k (k-NN measures)", 1, 100, key=url_key("k", 10))
    chosen = st.multiselect("Spaces", names, key=url_key("spaces", names[:16], names))
    sync_url(measure=measure, perm=int(n_perm), k=int(k), spaces=chosen)
    if len(chosen) < 2:
        st.info("Choose at least two spaces.")
        st.stop()
    kw = {"k": int(k)} if measure in ("mutual_knn", "cknna") else {}
    kw.update(preset.settings.similarity_kwargs(measure))
    key = cached.result_key("simmat", ds.fingerprint, measure, chosen, int(n_perm), kw, preset.name)
    result = None

    def matrix_spec(result) -> dict:
        """What both drawings show: the values, names, title, colour scale and p-values (hover)."""
        higher = result.get("higher_is_similar", True)
        bounded = measure not in ("procrustes",)
        done = [v for r in result["values"] for v in r if v is not None]
        filling = "" if result.get("complete", True) else " (filling in)"
        return dict(title=f"{MEASURE_LABELS[measure]} - {result['n_items']:,} items{filling}",
                    colorbar=MEASURE_LABELS[measure].split(" (")[0], zmin=None if not bounded else min([0.0] + done),
                    zmax=1.0 if bounded else None, reverse=not higher)

    def p_lines(result, prefix: str):
        pv = result.get("p_values")
        if pv is None:
            return None
        return [["" if p is None else f"{prefix}permutation p = {p:.3f}" for p in row] for row in pv]

    def matrix_figure(result):   # plotly, for the export's figure files (built when a download asks for it)
        return heatmap(result["values"], result["names"], result["names"], hover_extra=p_lines(result, "<br>"),
                       **matrix_spec(result))

    def matrix_args(result) -> dict:
        return heatmap_args(result["values"], result["names"], result["names"], hover_extra=p_lines(result, ""),
                            **matrix_spec(result))

    def draw_partial(partial):   # the cells computed so far, cheapest pairs first
        heatmap_chart(matrix_args(partial), key="sim_heatmap_partial")

    with guard():
        result = jobs.result(
            namespace, key, f"{MEASURE_LABELS[measure]} over {len(chosen)} spaces",
            lambda job: similarity_matrix({c: ds[c].vectors() if ds[c].kind == "tokens" else ds[c].data
                                           for c in chosen}, preset.settings.measure_name(measure),
                                          job.progress, n_permutations=int(n_perm), seed=0, partial=job.publish,
                                          **kw),
            partial=draw_partial)
    if result is not None:
        pv = result.get("p_values")
        # the SVG component (ui.svgchart; no plotly bundle in the browser for a matrix of a few cells), its cells
        # built once per result (a rerun or another visit only sends them); a click picks the pair below
        heat = cached.drawn(namespace, cached.result_key("drawing", "sim_heatmap_svg", key),
                            lambda: matrix_args(result))
        cell = heatmap_chart(heat, key="sim_heatmap")
        # the plotly figure, built once per result when an export asks for it
        fig = lambda: cached.drawn(namespace, cached.result_key("drawing", "sim_heatmap", key),  # noqa: E731
                                   lambda: safe_figure(matrix_figure(result)))
        rows = []
        for i, a in enumerate(result["names"]):
            for j, b in enumerate(result["names"]):
                if i < j or (not result.get("symmetric", True) and i != j):
                    rows.append({"space_a": a, "space_b": b, "measure": result["measure"],
                                 "value": result["values"][i][j],
                                 **({"p_value": pv[i][j]} if pv is not None else {})})
        table = pd.DataFrame(rows)
        manifest = build_manifest(view="similarity/matrix", dataset=ds, seeds=[0],
                                  params={"measure": measure, "spaces": chosen, "permutations": int(n_perm), **kw})
        export_controls("platoscope-similarity", manifest=manifest, fig=fig, table=table)
        if any(v is not None and v < 0 for r in result["values"] for v in r) and measure == "debiased_cka":
            st.warning("Some debiased CKA values are negative: the unbiased estimator can go below zero for "
                       "unrelated spaces and small n. They are shown as computed.")

        st.subheader("Two spaces side by side")
        # a click on an off-diagonal cell sets the pair; the click is a trigger, seen in the run it starts only,
        # so the pickers stay free afterwards, and the last click is kept (for this matrix) to name it below
        if cell:
            st.session_state["sim_clicked"] = (heat["data_key"], cell)
            if cell[0] != cell[1]:
                st.session_state["sim_left"], st.session_state["sim_right"] = cell[1], cell[0]
        last = st.session_state.get("sim_clicked")
        cell = last[1] if last and last[0] == heat["data_key"] else None
        for side, default in (("sim_left", chosen[1]), ("sim_right", chosen[0])):
            if st.session_state.get(side) not in chosen:
                st.session_state[side] = default
        a_col, b_col = st.columns(2)
        left = a_col.selectbox("Left", chosen, key="sim_left")
        right = b_col.selectbox("Right", chosen, key="sim_right")
        if cell:
            st.caption(f"Cell clicked: {md(cell[1])} vs {md(cell[0])}")
        colour = next((c for c in ("label", "tier", "group") if c in ds.items.columns), None)
        m = None
        for col, name in ((a_col, left), (b_col, right)):
            if col is b_col and name == left and m is None:
                continue   # the same PCA job: its progress box is in the left column
            with col, guard():
                m = pca_map_or_progress(ds, name, 5000, priority=1)
                if m is None:
                    continue
                shown = len(m["rows"])
                draw_map(ds, m["rows"], m["coords"], "(none)" if colour is None else colour,
                         title=f"PCA of '{name}'" + (f" - a seeded sample of {shown:,} of {ds.n:,} items"
                                                     if shown < ds.n else ""),
                         axes=("PCA 1", "PCA 2"), key=f"sim_map_{name}_{col is a_col}",
                         select=False, height=420, legend=False)

else:  # layer by layer
    st.caption("Compare every layer of one encoder with every layer of another (rows paired by item).")
    groups: dict[str, list[str]] = {}
    for n in names:
        m = re.match(r"(.+?)[_.-]?(layer|l|block)[_.-]?(\d+)$", n)
        if m:
            groups.setdefault(m.group(1), []).append(n)
    default_a = next(iter(groups.values()), names[: max(1, len(names) // 2)])
    la, lb = st.columns(2)
    side_a = la.multiselect("Encoder A spaces (rows)", names, default=default_a, key="layers_a")
    default_b = (list(groups.values())[1] if len(groups) > 1  # every layer of one model vs every layer of another
                 else [n for n in names if n not in default_a][:8] or names[:2])
    side_b = lb.multiselect("Encoder B spaces (columns)", names, default=default_b, key="layers_b")
    lmeasure = st.selectbox("Measure", measures, format_func=MEASURE_LABELS.get, key="layers_measure")
    if side_a and side_b:
        key = cached.result_key("layers", ds.fingerprint, lmeasure, side_a, side_b, preset.name)
        res = None
        with guard():
            res = jobs.computed(
                namespace, key, f"{MEASURE_LABELS[lmeasure]}: {len(side_a)} x {len(side_b)} spaces",
                lambda progress: layerwise_similarity(
                    [ds[a].vectors() if ds[a].kind == "tokens" else ds[a].data for a in side_a],
                    [ds[b].vectors() if ds[b].kind == "tokens" else ds[b].data for b in side_b],
                    preset.settings.measure_name(lmeasure), names_a=side_a, names_b=side_b, progress=progress,
                    **preset.settings.similarity_kwargs(lmeasure)))
        if res is not None:
            figl = heatmap(res["values"], res["names_b"], res["names_a"],
                           title=f"{MEASURE_LABELS[lmeasure]} layer by layer", colorbar=lmeasure,
                           reverse=not res.get("higher_is_similar", True), x_title="encoder B", y_title="encoder A")
            st.plotly_chart(safe_figure(figl), key="layers_heatmap", width="stretch")
            tablel = pd.DataFrame(res["values"], index=res["names_a"], columns=res["names_b"]).reset_index(
                names="space_a")
            export_controls("platoscope-layers", fig=figl, table=tablel,
                            manifest=build_manifest(view="similarity/layers", dataset=ds,
                                                    params={"measure": lmeasure, "a": side_a, "b": side_b}))
