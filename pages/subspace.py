"""Subspace: align two spaces on anchors, judge on held-out queries (paper A's protocol and curves)."""
import pandas as pd
import streamlit as st

from core.align import METHODS, PAPER_A_METHODS
from core.export import build_manifest
from core.evaluation.alignment import DEFAULT_ANCHOR_COUNTS, DEFAULT_SWEEP_KS, run_protocol, sweep_anchors, sweep_k
from ui import cached, data, jobs
from ui.plots import METHOD_LABELS, METRIC_LABELS, PALETTE, bars_with_errors, curve, spectrum
from ui.svgchart import bars_args, bars_chart
from core.presets import PROTOCOL_FIELDS
from ui.presets import preset_control
from ui.widgets import export_controls, guard, page_header, sync_url, url_key
from ui.text import md, safe_figure

page_header("Subspace alignment", "subspace",
            "Fit a map on anchor pairs, judge it on held-out query pairs: matching, retrieval and MRR, "
            "mean +- std over seeds, chance beside every number.")

ds = data.current_dataset()
if ds is None or len(ds.spaces) < 2:
    st.info("This view needs a dataset with at least two spaces: pick the demo or upload files in the sidebar.")
    st.stop()

names = ds.space_names


def _default(modalities, avoid=None):
    """The widest space of the wanted modalities (e.g. a learned 3D encoder over a hand-made descriptor)."""
    fits = [n for n in names if ds[n].modality in modalities and n != avoid]
    if fits:
        return max(fits, key=lambda n: ds[n].dim)
    return next(n for n in names if n != avoid)


src_default = _default(("text",))
tgt_default = _default(("3d", "image"), avoid=src_default)
c1, c2 = st.columns(2)
source = c1.selectbox("Source space (queries)", names, key=url_key("x", src_default, names))
target = c2.selectbox("Target space (retrieved)", [n for n in names if n != source],
                      key=url_key("y", tgt_default if tgt_default != source else names[1],
                                  [n for n in names if n != source]))
c3, c4, c5, c6, c7 = st.columns(5)
k = c3.number_input("Subspace dim k", 1, 4096, key=url_key("k", 50))
anchors = c4.number_input("Anchors (max)", 2, 10_000_000, key=url_key("anchors", 30000))
queries = c5.number_input("Queries", 2, 100_000, key=url_key("queries", 500))
n_seeds = c6.number_input("Seeds", 1, 20, key=url_key("seeds", 3))
reg = c7.select_slider("CCA ridge r", [0.0, 1e-4, 1e-3, 1e-2, 1e-1], key=url_key("reg", 1e-3))
methods = st.multiselect("Methods", list(METHODS), format_func=METHOD_LABELS.get,
                         key=url_key("methods", list(PAPER_A_METHODS), METHODS))
p1, p2 = st.columns(2)
partner_options = ["(each item alone)"] + ds.metadata_columns()
partners = p1.selectbox("True partners: items sharing", partner_options,
                        key=url_key("partners", "group" if "group" in partner_options else "(each item alone)",
                                    partner_options),
                        help="A hit is any item of the true item's group; matching works on groups (METHODS.md 3).")
metric = p2.selectbox("Metric to plot", list(METRIC_LABELS), format_func=METRIC_LABELS.get,
                      key=url_key("metric", "matching_accuracy", list(METRIC_LABELS)))
sync_url(x=source, y=target, k=int(k), anchors=int(anchors), queries=int(queries), seeds=int(n_seeds),
         reg=float(reg), methods=methods, partners=partners, metric=metric)
preset = preset_control("A", only=PROTOCOL_FIELDS, actual=dict(k=int(k), n_anchors=int(anchors),
                                                                n_queries=int(queries), n_seeds=int(n_seeds)))

if not methods:
    st.info("Choose at least one method.")
    st.stop()

X = ds[source].vectors() if ds[source].kind == "tokens" else ds[source].data
Y = ds[target].vectors() if ds[target].kind == "tokens" else ds[target].data
groups = None if partners == "(each item alone)" else ds.groups(partners)
if groups is None and "caption" in ds.items.columns and ds[source].modality == "text":
    shared = int(ds.items["caption"].duplicated(keep=False).sum())
    if shared:
        st.info(f"{shared:,} items share their caption with another item, so their '{md(source)}' vectors are "
                "identical and no method can tell them apart: choose 'caption' under True partners to count "
                "any of them as a hit.")
seeds = list(range(int(n_seeds)))
namespace = data.cache_namespace(ds)
common = dict(n_queries=int(queries), seeds=seeds, groups=groups, reg=float(reg))
base_params = {"source": source, "target": target, "k": int(k), "anchors": int(anchors), "queries": int(queries),
               "seeds": seeds, "reg": float(reg), "methods": methods, "partners": partners}
st.caption(f"Scores: cosine after affine/CCA maps, local CKA score for the local-CKA methods. "
           f"{f'Items sharing a {md(repr(partners))} value count as true partners. ' if groups is not None else ''}"
           f"Dataset: {ds.n:,} items; {md(source)} is {ds[source].dim}-d, {md(target)} is {ds[target].dim}-d.")

VIEWS = ["At one k", "Curve over k", "Curve over anchors", "Canonical correlations"]
# one view at a time (in the URL): only the view that is open computes anything
view = st.segmented_control("View", VIEWS, key=url_key("view", VIEWS[0], VIEWS), required=True,
                            label_visibility="collapsed")
sync_url(view=view)


def protocol_result():
    key = cached.result_key("protocol", ds.fingerprint, base_params)
    return jobs.result(namespace, key, "Fitting and judging every method",
                       lambda job: run_protocol(X, Y, methods=methods, k=int(k), n_anchors=int(anchors),
                                                progress=job.progress, **common))


def draw_curve(result, x_key, title, x_title, chart_key):
    fig = curve(result["summary"], x_key, metric, title=title, x_title=x_title, log_x=True)
    st.plotly_chart(safe_figure(fig), key=chart_key, width="stretch")
    return fig


if view == "At one k":
    res = None
    with guard():
        res = protocol_result()
    if res is not None:
        for note in res.get("adjustments", []):
            st.info(f"Adjusted to fit the dataset: {md(note)}")
        s = res["settings"]
        st.caption(f"{s.get('n_anchors')} anchors, {s.get('n_queries')} queries, seeds {s.get('seeds')}, "
                   f"fitted in {res['seconds']:.2f} s.")
        rows = []
        for method, metrics in res["results"].items():
            for name, v in metrics.items():
                rows.append({"method": method, "metric": name, "mean": v["mean"], "std": v["std"],
                             "chance": v["chance"]})
        table = pd.DataFrame(rows)
        wide = table[table["metric"].isin(["matching_accuracy", "top1_x_to_y", "top5_x_to_y", "top1_y_to_x",
                                           "top5_y_to_x", "mrr"])].copy()
        wide["value"] = [f"{m:.3f} +- {s:.3f} (chance {c:.3f})" for m, s, c in
                         zip(wide["mean"], wide["std"], wide["chance"])]
        pivot = wide.pivot(index="method", columns="metric", values="value")
        pivot.index = [METHOD_LABELS.get(m, m) for m in pivot.index]
        st.dataframe(pivot.rename(columns=METRIC_LABELS), width="stretch")
        shown = [r for r in rows if r["metric"] == metric]
        title = f"{METRIC_LABELS[metric]} at k = {int(k)}: {source} -> {target}"
        # SVG bars (ui.svgchart: no plotly bundle in the browser for a few bars); the export's figure is plotly,
        # built when a download asks for it
        bars_chart(bars_args(shown, series_key="metric", category_key="method", series_labels=METRIC_LABELS,
                             category_labels=METHOD_LABELS, palette=PALETTE, title=title,
                             y_title=METRIC_LABELS[metric]), key="subspace_bars")
        fig = lambda: safe_figure(bars_with_errors(shown, title=title, y_title=METRIC_LABELS[metric]))  # noqa: E731
        export_controls("platoscope-protocol", fig=fig, table=table,
                        manifest=build_manifest(view="subspace/protocol", dataset=ds, seeds=seeds,
                                                params={**base_params, "settings": s}))

elif view == "Curve over k":
    k_values = st.multiselect("k values", list(DEFAULT_SWEEP_KS) + [2, 4, 512, 768], key="sweep_k_values",
                              default=list(DEFAULT_SWEEP_KS))
    sweep_methods = [m for m in methods if m in ("affine", "pca_affine", "cca_affine", "cca_local_cka",
                                                  "local_cka")]
    if not sweep_methods:
        st.info("Add a method that depends on k (affine, PCA + affine, CCA + affine, CCA + local CKA).")
    if k_values and sweep_methods:
        curve_res = None
        title = f"{METRIC_LABELS[metric]} against k"
        with guard():
            key = cached.result_key("sweep_k", ds.fingerprint, base_params, sorted(k_values), sweep_methods)
            curve_res = jobs.result(
                namespace, key, f"Sweeping k over {len(k_values)} values",
                lambda job: sweep_k(X, Y, k_values=k_values, methods=sweep_methods, n_anchors=int(anchors),
                                    progress=job.progress, partial=job.publish, **common),
                partial=lambda p: draw_curve(p, "k", f"{title} (filling in)", "subspace dimension k",
                                             "subspace_curve_k_partial"))
        if curve_res is not None:
            for note in curve_res.get("adjustments", []):
                st.info(f"Adjusted: {md(note)}")
            fig = draw_curve(curve_res, "k", title, "subspace dimension k", "subspace_curve_k")
            st.caption("Paper A: after CCA a low k (about 50) works best; affine alone prefers higher dimensions. "
                       "Methods that do not depend on k are drawn as dotted lines.")
            export_controls("platoscope-sweep-k", fig=fig, table=pd.DataFrame(curve_res["summary"]),
                            manifest=build_manifest(view="subspace/sweep_k", dataset=ds, seeds=seeds,
                                                    params={**base_params, "k_values": sorted(k_values)}))

elif view == "Curve over anchors":
    counts = st.multiselect("Anchor counts", sorted(set(DEFAULT_ANCHOR_COUNTS) | {100, 250, 500}),
                            default=[c for c in (100, 250, 500, 1000, 2000, 5000, 10000, 20000, 30000)
                                     if c <= max(ds.n - min(int(queries), ds.n // 5), 100)],
                            key="sweep_anchor_counts")
    if counts:
        ares = None
        title = f"{METRIC_LABELS[metric]} against anchors"
        with guard():
            key = cached.result_key("sweep_anchors", ds.fingerprint, base_params, sorted(counts))
            ares = jobs.result(
                namespace, key, f"Sweeping {len(counts)} anchor counts",
                lambda job: sweep_anchors(X, Y, anchor_counts=counts, methods=methods, k=int(k),
                                          progress=job.progress, partial=job.publish, **common),
                partial=lambda p: draw_curve(p, "n_anchors", f"{title} (filling in)", "number of anchors",
                                             "subspace_curve_anchors_partial"))
        if ares is not None:
            for note in ares.get("adjustments", []):
                st.info(f"Adjusted: {md(note)}")
            fig = draw_curve(ares, "n_anchors", title, "number of anchors", "subspace_curve_anchors")
            export_controls("platoscope-sweep-anchors", fig=fig, table=pd.DataFrame(ares["summary"]),
                            manifest=build_manifest(view="subspace/sweep_anchors", dataset=ds, seeds=seeds,
                                                    params={**base_params, "anchor_counts": sorted(counts)}))

else:  # canonical correlations: part of the protocol's result (the same job as "At one k")
    if not any(m.startswith("cca") for m in methods):
        st.info("Add a CCA method (CCA + affine or CCA + local CKA) to see the canonical correlations.")
        st.stop()
    res = None
    with guard():
        res = protocol_result()
    if res is not None and res.get("cca"):
        cca = res["cca"]
        fig = spectrum(cca["canonical_correlations"], name="regularised (anchors)",
                       title=f"Canonical correlations, k = {int(k)}, r = {cca.get('reg')}",
                       y_title="correlation", extra={"plain, held-out queries": cca.get("heldout_correlations")}
                       if cca.get("heldout_correlations") else None)
        st.plotly_chart(safe_figure(fig), key="subspace_cca", width="stretch")
        st.caption("With r > 0 the anchors' correlations are regularised; the held-out curve is the plain "
                   "correlation of each projected pair of columns on the queries (mean over seeds).")
        export_controls("platoscope-cca", fig=fig, table=pd.DataFrame(
            {"component": range(1, len(cca["canonical_correlations"]) + 1),
             "regularised": cca["canonical_correlations"],
             **({"heldout": cca["heldout_correlations"]} if cca.get("heldout_correlations") else {})}),
            manifest=build_manifest(view="subspace/cca", dataset=ds, seeds=seeds, params=base_params))
