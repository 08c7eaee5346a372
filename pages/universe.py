"""Universe: many spaces at once (paper D) - PW, GPA, GCCA, GCPA judged by any-to-any retrieval on held-out items."""
import pandas as pd
import streamlit as st

from core.device import has_fast_bfloat16
from core.export import build_manifest
from core.universe import METHODS
from core.evaluation.universe import UniverseStudy, evaluate_universe
from ui import cached, data, jobs
from ui.plots_universe import (METHOD_LABELS, METRIC_LABELS, add_vs_refit_figure, clustering_bars,
                               clustering_bars_args, mean_worst_bars_args, retrieval_heatmap_args, retrieval_heatmaps,
                               universe_map_figure)
from ui.svgchart import bars_chart, heatmap_chart
from ui.presets import preset_control
from ui.widgets import export_controls, guard, page_header, sync_url, url_key
from ui.text import md, safe_figure


def draw_heatmaps(args: list[dict], key: str, per_row: int = 2):
    """The SVG heatmaps (ui.svgchart), at most ``per_row`` side by side."""
    for start in range(0, len(args), per_row):
        cols = st.columns(per_row)
        for k, (col, a) in enumerate(zip(cols, args[start:start + per_row])):
            with col:
                heatmap_chart(a, key=f"{key}_{start + k}")

page_header("Universe", "universe",
            "Put several spaces into one shared universe (pairwise Procrustes, GPA, GCCA, GCPA), fitted on training "
            "items and judged on held-out ones: any-to-any retrieval, cycle-consistency, clustering, adding a space.")

GCPA_PRECISIONS = {"float32": "float32 (default)", "bfloat16": "bfloat16 matrix products (faster)"}

preset = preset_control("D")
ds = data.current_dataset()
if ds is None or len(ds.spaces) < 2:
    st.info("This view needs a dataset with at least two spaces (three or more to see a universe at work): "
            "pick the demo or upload files in the sidebar.")
    st.stop()

names = ds.space_names
DEMO_DEFAULT = ["minilm", "descriptor_3d", "pointnet", "minilm_layer3"]
default_spaces = [n for n in DEMO_DEFAULT if n in names]
if len(default_spaces) < 3:
    default_spaces = names[:min(4, len(names))]

chosen = st.multiselect("Spaces (rows paired by item; token sets are mean-pooled)", names,
                        key=url_key("spaces", default_spaces, names))
methods = st.multiselect("Methods", list(METHODS), format_func=METHOD_LABELS.get,
                         key=url_key("methods", list(METHODS), METHODS))
c2, c3, c4, c5 = st.columns(4)
test_size = c2.select_slider("Held-out fraction", [0.1, 0.2, 0.3, 0.4, 0.5], key=url_key("test", 0.2))
seed = c3.number_input("Seed (split, GCPA)", 0, 10_000, key=url_key("seed", 0))
width = c4.selectbox("Width matching", ["pca", "pad"], key=url_key("width", "pca", ["pca", "pad"]),
                     format_func={"pca": "PCA to the smallest width", "pad": "zero-pad to the largest"}.get)
authors_epochs = preset.settings.universe_kwargs().get("gcpa_epochs") if preset.is_preset else None
if authors_epochs is not None:   # the preset fixes the authors' epoch count; "custom" gives the box back
    epochs = c5.number_input("GCPA max epochs", 0, 2000, value=int(authors_epochs), disabled=True,
                             key="universe_preset_epochs", help="the authors' code trains GCPA for 50 epochs")
else:
    epochs = c5.number_input("GCPA max epochs", 0, 2000, key=url_key("epochs", 100))
label_options = ["(none)"] + cached.label_columns(ds)
c6, c7, c9, c8 = st.columns([2, 2, 2, 1])
label_col = c6.selectbox("Label column for clustering", label_options,
                         key=url_key("labels", "label" if "label" in label_options else "(none)", label_options))
standardize = c8.checkbox("z-score features", key=url_key("zscore", True))
metric = c7.selectbox("Retrieval metric to draw", list(METRIC_LABELS), format_func=METRIC_LABELS.get,
                      key=url_key("metric", "top1", list(METRIC_LABELS)))
fast_bf16 = has_fast_bfloat16()
precision = c9.selectbox(
    "GCPA training precision", list(GCPA_PRECISIONS), format_func=GCPA_PRECISIONS.get,
    key=url_key("precision", "float32", list(GCPA_PRECISIONS)),
    help="bfloat16: the corrector's matrix products in bfloat16 (weights, loss, early stopping in float32); "
         "about 3x faster per epoch on a CPU with AVX-512 BF16 or AMX, held-out losses within about 1e-4 of "
         "float32 (docs/METHODS.md, GCPA). " + ("This machine has native bfloat16." if fast_bf16 else
                                                "This machine has no native bfloat16: it would be slower."))
sync_url(spaces=chosen, methods=methods, test=float(test_size), seed=int(seed), width=width,
         labels=label_col, zscore=bool(standardize), metric=metric, precision=precision,
         **({} if authors_epochs is not None else {"epochs": int(epochs)}))

if len(chosen) < 2:
    st.info("Choose at least two spaces (three or more make the comparison with pairwise maps meaningful).")
    st.stop()
if len(chosen) > 10:
    st.info("Choose at most 10 spaces.")
    st.stop()
if not methods:
    st.info("Choose at least one method.")
    st.stop()

namespace = data.cache_namespace(ds)
groups = ds.groups() if "group" in ds.items.columns else None
params = {"spaces": chosen, "methods": methods, "test_size": float(test_size), "seed": int(seed), "width": width,
          "standardize": bool(standardize), "gcpa_epochs": int(epochs), "labels": label_col, "preset": preset.name}
MAP_ITEMS = 300
widths = ", ".join(f"{md(n)} {ds[n].dim}-d" for n in chosen)
st.caption(f"{ds.n:,} items; {widths}. Scores are cosine similarities in universe coordinates "
           f"(pairwise Procrustes: a mapped into b's frame). "
           f"{'Items of one group count as true partners and stay on one side of the split. ' if groups is not None else ''}")

study_args = dict(groups=groups, test_size=float(test_size), seed=int(seed), width=width,
                  standardize=bool(standardize), gcpa_epochs=int(epochs), gcpa_precision=precision, **preset.kwargs)
# the method jobs share one split, one preprocessing and the fitted models (GCPA reuses GPA): one live study per
# dataset and settings; the labels only matter to the clustering, which is its own job
shared_params = {k: v for k, v in params.items() if k not in ("methods", "gcpa_epochs", "labels")}
study_key = cached.result_key("universe_study", ds.fingerprint, shared_params, int(epochs), precision)


def study() -> UniverseStudy:
    return jobs.shared(namespace, study_key,
                       lambda: UniverseStudy({n: ds[n].vectors() for n in chosen}, **study_args))


RESULTS_VERSION = 2     # typed results with top1 / top5 keys (results stored by older versions are not reused)


def method_key(m):
    return cached.result_key("universe_method", RESULTS_VERSION, ds.fingerprint, shared_params, m,
                             ({"gcpa_epochs": int(epochs)} if precision == "float32" else
                              {"gcpa_epochs": int(epochs), "gcpa_precision": precision}) if m == "gcpa" else {})


def method_result(m, **kw):
    """One job per method: PW, GPA and GCCA first; GCPA (training) after them, at a lower priority."""
    def compute(job):
        return {**_header(study()), "method": study().evaluate(m, map_items=MAP_ITEMS, progress=job.progress)}

    return jobs.result(namespace, method_key(m), f"{METHOD_LABELS[m]} on {len(chosen)} spaces", compute,
                       priority=1 if m == "gcpa" else 0, **kw)


def _header(s: UniverseStudy) -> dict:
    rows = s.map_rows(MAP_ITEMS)
    return {"n_train": int(len(s.train_rows_)), "n_test": int(len(s.test_rows_)), "seed": s.seed,
            "map_rows": None if rows is None else s.test_rows_[rows].tolist()}


# GCPA trains for minutes. Its job (when there is none yet) is submitted only once PW, GPA and GCCA have finished,
# at the end of the script run that draws their results, into a slot kept here: it then competes neither with
# their jobs nor with that run and the browser's drawing of it (CPU, GIL)
first = [m for m in METHODS if m in methods and m != "gcpa"]
outputs, first_pending, gcpa_slot = {}, False, None
with st.container():
    for m in [m for m in METHODS if m in methods]:
        if m == "gcpa" and first and not jobs.known(namespace, method_key(m)):
            gcpa_slot = st.container()
            continue
        with guard():
            out = method_result(m)
            if out is not None:
                outputs[m] = out
            first_pending = first_pending or jobs.pending(namespace, method_key(m))


def start_gcpa():
    """GCPA's job, if it waits for this run: submitted now that the results above are drawn (its box in its slot)."""
    if gcpa_slot is None:
        return
    with gcpa_slot, guard():
        if first_pending:
            st.caption(f":material/hourglass_top: {md(METHOD_LABELS['gcpa'])} trains once "
                       f"{', '.join(METHOD_LABELS[m] for m in first)} are done.")
        else:
            method_result("gcpa", wait=0)


if not outputs:
    start_gcpa()
    st.stop()

res = next(iter(outputs.values()))
results = {m: out["method"] for m, out in outputs.items()}
METHOD_LABELS = {**METHOD_LABELS, **{m: r["label"] for m, r in results.items() if r.get("label")}}
retrieval = {m: r["retrieval"] for m, r in results.items()}
pre = next(iter(results.values()))["description"]["preprocessing"]
st.caption(f"Fitted on {res['n_train']} items, judged on {res['n_test']} held-out items (seed {res['seed']}). "
           f"Preprocessing: {pre['standardize']}; " +
           "; ".join(f"{md(n)}: {v['width_step']}" for n, v in pre["spaces"].items()) + ". " +
           (f"GPA: {results['gpa']['iterations_run']} iterations, objective {results['gpa']['objective']:.4g}"
            f" (stopped on {results['gpa']['description'].get('stop_reason', '?')})."
            if "gpa" in results and "iterations_run" in results["gpa"] else "") +
           (f" GCPA: {results['gcpa']['description'].get('epochs_run', '?')} epochs (best "
            f"{results['gcpa']['description'].get('best_epoch', '?')}), "
            f"{results['gcpa']['description'].get('precision', 'float32')}."
            if "gcpa" in results else ""))

VIEWS = ["Retrieval and cycles", "Map of the universe", "Add a space", "Clustering"]
# one view at a time, kept in the URL: a view's work (e.g. GPA-ADD) starts only when it is opened
view = st.segmented_control("View", VIEWS, key=url_key("view", VIEWS[0], VIEWS), required=True,
                            label_visibility="collapsed")
sync_url(view=view)

if view == "Retrieval and cycles":
    # built once per set of results and metric (ui.cached.drawn): a rerun or a second visit only sends them
    shown_keys = [method_key(m) for m in outputs]
    # SVG (ui.svgchart: no plotly bundle in the browser); the export's plotly figure is built when a download asks
    st.markdown(f"**Any-to-any {METRIC_LABELS[metric]} on held-out items**")
    st.caption("row = query space, column = retrieved space; cosine in the universe")
    draw_heatmaps(cached.drawn(namespace, cached.result_key("drawing", "universe_heatmaps_svg", shown_keys, metric),
                               lambda: retrieval_heatmap_args(retrieval, metric)), key="universe_heatmaps")

    def fig():      # the export's plotly figure, built once per result when a download asks for it
        return cached.drawn(namespace, cached.result_key("drawing", "universe_heatmaps", shown_keys, metric),
                            lambda: safe_figure(retrieval_heatmaps(retrieval, metric)))

    rows = []
    for m, r in results.items():
        s = r["retrieval"]["summary"]
        rows.append({"method": METHOD_LABELS[m], "fit seconds": round(r["fit_seconds"], 3),
                     **{f"{METRIC_LABELS[k]} mean": s[k]["mean"] for k in METRIC_LABELS},
                     **{f"{METRIC_LABELS[k]} worst": s[k]["worst"] for k in METRIC_LABELS},
                     "worst pair (Hits@1)": " -> ".join(s["top1"]["worst_pair"] or [])})
    table = pd.DataFrame(rows)
    export_controls("platoscope-universe-retrieval", fig=fig, table=table,
                    manifest=build_manifest(view="universe/retrieval", dataset=ds, seeds=[int(seed)], params=params))
    bars_chart(cached.drawn(namespace, cached.result_key("drawing", "universe_bars_svg", shown_keys, metric),
                            lambda: mean_worst_bars_args(retrieval, metric)), key="universe_bars")
    st.dataframe(table.set_index("method"), width="stretch")
    ch = next(iter(retrieval.values()))["chance"]
    st.caption(f"Chance: Hits@1 {ch['top1']:.4f}, Hits@5 {ch['top5']:.4f}, MRR {ch['mrr']:.4f}. "
               "Paper D: strict isometry (GPA) is weaker than GCCA at retrieval; GCPA beats both while keeping "
               "GPA's geometry.")
    st.subheader("Cycle-consistency (a -> b -> c -> a)")
    cyc = pd.DataFrame([{"method": METHOD_LABELS[m], "mean relative error": r["cycle"]["mean"],
                         "max relative error": r["cycle"]["max"], "cycles": r["cycle"]["n_triples"]}
                        for m, r in results.items()])
    if cyc["cycles"].sum() == 0:
        st.info("Cycles need at least three spaces.")
    else:
        st.dataframe(cyc.set_index("method"), width="stretch")
        st.caption("||x - cycle(x)|| / ||x|| on held-out items in the first space's preprocessed coordinates. GPA is "
                   "cycle-consistent by construction (maps R_a R_b^T); GCCA goes through the universe and back by "
                   "least squares; pairwise maps and GCPA's corrector are not.")

elif view == "Map of the universe":
    shown = [m for m in results if results[m].get("map")]
    map_method = st.radio("Universe of", shown, format_func=METHOD_LABELS.get, horizontal=True,
                          key=url_key("map", "gcpa" if "gcpa" in shown else shown[0], shown))
    sync_url(map=map_method)
    umap = results[map_method]["map"]
    item_rows = res["map_rows"]
    texts = cached.hover_texts(ds)      # one list per dataset (it was rebuilt for every one of the 300 items)
    hover = [texts[r] for r in item_rows]
    options = list(range(len(item_rows)))
    pick = st.selectbox("Highlight an item (or click a point)", [None] + options, key="universe_item",
                        format_func=lambda q: "(none)" if q is None else f"{ds.items['id'].iloc[item_rows[q]]}: "
                                                                         f"{hover[q][:80]}")
    highlight = [] if pick is None else [pick]
    state = st.session_state.get("universe_map_chart")
    try:
        points = state["selection"]["points"] if state else []
    except (KeyError, TypeError):
        points = []
    for p in points or []:
        cd = p.get("customdata")
        if isinstance(cd, list):
            cd = cd[0] if cd else None
        if cd is not None and int(cd) not in highlight:
            highlight.append(int(cd))
    fig = universe_map_figure(umap, hover, highlight=highlight,
                              title=f"{METHOD_LABELS[map_method]} universe: {len(item_rows)} held-out items x "
                                    f"{len(umap['spaces'])} spaces (shared PCA of normalised coordinates)")
    st.plotly_chart(safe_figure(fig), key="universe_map_chart", on_select="rerun", selection_mode="points", width="stretch")
    st.caption("Each item appears once per space; grey lines join its copies. Short lines = the spaces agree on "
               "where the item lives.")
    export_controls("platoscope-universe-map", fig=fig, table=pd.DataFrame(
        [{"item": ds.items["id"].iloc[r], "space": s, "pc1": umap["coords"][i][q][0], "pc2": umap["coords"][i][q][1]}
         for i, s in enumerate(umap["spaces"]) for q, r in enumerate(item_rows)]),
        manifest=build_manifest(view="universe/map", dataset=ds, seeds=[int(seed)],
                                params={**params, "map_method": map_method}))

elif view == "Add a space":
    candidates = [n for n in names if n not in chosen]
    if len(chosen) < 2 or not candidates:
        st.info("Adding a space needs a space that is not in the universe yet: leave one out of the selection above.")
    else:
        add_default = "minilm_layer6" if "minilm_layer6" in candidates else candidates[0]
        new = st.selectbox("Space to add to the fitted GPA universe", candidates,
                           key=url_key("add", add_default, candidates))
        sync_url(add=new)
        add_res = None
        with guard():
            akey = cached.result_key("universe_add", RESULTS_VERSION, ds.fingerprint, shared_params, new)
            label = f"GPA-ADD of {new} against a refit"

            def compute_add(job):
                return evaluate_universe({n: ds[n].vectors() for n in [*chosen, new]}, ["gpa"], groups=groups,
                                         add=new, test_size=float(test_size), seed=int(seed), width=width,
                                         standardize=bool(standardize), progress=job.progress)["add"]

            # computed only on request: a button starts the job; afterwards the result (or the job) is found
            start = jobs.job_for(namespace, akey) is not None or st.button(
                f"Add '{new}' with GPA-ADD and compare with a refit", key="universe_add_go", type="primary")
            add_res = jobs.result(namespace, akey, label, compute_add, start=start)
            if add_res is None and not start:
                st.caption("GPA-ADD fits only the new space's rotation; the comparison refits GPA on every space.")
        if add_res is not None:
            fig = add_vs_refit_figure(add_res)
            st.plotly_chart(safe_figure(fig), key="universe_add", width="stretch")
            st.caption("GPA-ADD fits only the new space's rotation against the fixed consensus; every other map "
                       "stays as it was. The refit re-estimates all of them with the new space in the consensus.")
            draw_heatmaps([{**retrieval_heatmap_args({"gpa": add_res[k]}, "top1")[0], "title": f"{label}: Hits@1"}
                           for label, k in (("GPA-ADD", "add"), ("refit GPA", "refit"))], key="universe_add_heat")
            export_controls("platoscope-universe-add", fig=fig, table=pd.DataFrame(
                [{"way": w, "seconds": add_res[f"{w}_seconds"], "top1_new_pairs": add_res["top1_new_pairs"][w],
                  "top1_base_pairs": add_res["top1_base_pairs"][w],
                  "top1_other_pairs": add_res["top1_base_pairs"][w]}   # the old column, for one release
                 for w in ("add", "refit")]),
                manifest=build_manifest(view="universe/add", dataset=ds, seeds=[int(seed)],
                                        params={**params, "added": new}))

elif label_col == "(none)":  # clustering, without labels
    st.info("Choose a label column above to see k-means clustering scores in the universe.")
else:  # clustering
    clustered = {}
    labels = ds.items[label_col].to_numpy(dtype=object)
    for m in results:               # one job per method, started when this view is opened
        with guard():
            def compute_clusters(job, m=m):
                return study().clustering(m, labels, progress=job.progress)

            ckey = cached.result_key("universe_clusters", method_key(m), label_col)
            c = jobs.result(namespace, ckey, f"k-means clustering in the {METHOD_LABELS[m]} universe",
                            compute_clusters)
            if c is not None:
                clustered[m] = {**results[m], "clustering": c}
    if clustered:
        results = clustered
        bars_chart(clustering_bars_args(results), key="universe_cluster")
        fig = lambda: safe_figure(clustering_bars(results))  # noqa: E731  (the export's, built on request)
        crow = []
        for m, r in results.items():
            for sname, v in r["clustering"]["spaces"].items():
                crow.append({"method": METHOD_LABELS[m], "space": sname, "ARI": v["ari"], "ARI std": v["ari_std"],
                             "NMI": v["nmi"], "NMI std": v["nmi_std"], "clusters": v["n_clusters"]})
        ctable = pd.DataFrame(crow)
        st.dataframe(ctable, width="stretch", hide_index=True)
        st.caption(f"k-means (k = number of distinct '{md(label_col)}' values) on the L2-normalised universe coordinates "
                   f"of each space's held-out items; ARI / NMI from scikit-learn, mean +- std over "
                   f"{len(next(iter(results.values()))['clustering']['seeds'])} seeds.")
        export_controls("platoscope-universe-clustering", fig=fig, table=ctable,
                        manifest=build_manifest(view="universe/clustering", dataset=ds, seeds=[0, 1, 2], params=params))

start_gcpa()
