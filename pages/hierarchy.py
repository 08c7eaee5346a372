"""Hierarchy: radial genericness of caption chains, a chain inspector, and RE fine-tuning before / after (paper C)."""
import numpy as np
import pandas as pd
import streamlit as st

from core.export import build_manifest
from core.errors import DataError
from core.hierarchy import (chain_layout, chain_pca, chain_table, chains_from_dataset, contradicting_chain,
                            exterior_angle_matrix, text_space_encoder, wide_tier_spaces)
from core.evaluation.hierarchy import hierarchy_report
from ui import cached, data, jobs
from ui.encoders import check_allowed, encoder_for
from ui.plots_hierarchy import angle_heatmap, before_after_bars, chain_view, radial_plot, training_curve
from ui.presets import preset_control
from ui.widgets import export_controls, guard, page_header, show_error, sync_url, url_key
from ui.text import md, safe_figure

page_header("Hierarchy", "hierarchy",
            "Caption chains (generic -> specific) against the root, the embedding of the empty string: "
            "genericness d_r, tau_d, exterior angles, hierarchical retrieval and RE fine-tuning (paper C).")
preset = preset_control("C")

ds = data.current_dataset()
layout = chain_layout(ds) if ds is not None else None
if ds is None or layout is None:
    st.info("This view needs caption chains: items with columns chain, tier and caption (a chains or HierarCaps "
            "CSV), or tier_0, tier_1, ... (one chain per item, as in the demo). Pick the demo or upload a CSV in "
            "the sidebar.")
    st.stop()

ENCODE = "encode the captions with an encoder"
if layout == "wide":
    text_options = list(wide_tier_spaces(ds)) + [ENCODE]
else:
    text_options = [n for n in ds.vector_space_names() if ds[n].modality == "text"] + [ENCODE]
image_options = ["none"] + [n for n in ds.vector_space_names() if ds[n].modality in ("image", "3d", "other")
                            and not n.startswith(tuple(f"{p}_tier" for p in wide_tier_spaces(ds)))]

c1, c2, c3 = st.columns(3)
text_src = c1.selectbox("Text embeddings", text_options, key=url_key("text", text_options[0], text_options),
                        help="wide layout: the prefix of the tier spaces (e.g. minilm -> minilm_tier0..3)")
if text_src == ENCODE:
    enc_spec = c1.text_input("Text encoder", key=url_key("encoder", "minilm"),
                             help="minilm (offline), open_clip:ViT-B-32:openai (paper C's CLIP setting), "
                                  "hf:MODEL, st:MODEL; the root is the empty string embedded by the same encoder")
    text_enc = {"spec": enc_spec.strip() or "minilm", "pooling": "mean", "layer": None}
else:
    text_enc = text_space_encoder(ds, text_src)  # recorded in the space's info when it was encoded
enc_problem = None
if text_enc is not None:
    try:
        check_allowed(text_enc["spec"])
    except DataError as exc:
        enc_problem, text_enc = exc, None
if text_src == ENCODE and text_enc is None:
    show_error(enc_problem or DataError("choose a text encoder"))
    st.stop()

enc_label = None if text_enc is None else text_enc["spec"] + (
    f", layer {text_enc['layer']}" if text_enc["layer"] is not None else "")
root_options = (["encoder", "mean"] if text_enc is not None else ["mean"])
root_labels = {"encoder": f"empty string, embedded by {enc_label}", "mean": "mean embedding (fallback)"}
root_key = url_key("root", root_options[0], root_options)
if st.session_state.get("hierarchy_root_options", root_options) != root_options:
    st.session_state[root_key] = root_options[0]  # an encoder became (un)available: prefer the paper's root
st.session_state["hierarchy_root_options"] = root_options
root_opt = c2.selectbox("Root", root_options, format_func=root_labels.get, key=root_key,
                        help="The paper's root is the embedding of the empty string by the same text encoder (the "
                             "encoder recorded with the space when it was encoded); without it the mean embedding "
                             "stands in (stated on every number).")
img_default = "pointnet" if "pointnet" in image_options else "none"
image_src = c3.selectbox("Image side (for retrieval)", image_options,
                         key=url_key("image", img_default, image_options),
                         help="Same-model image embeddings are used as they are; another space (e.g. 3D) is mapped "
                              "into the text space by an affine map fitted on training chains only.")
seed = int(st.number_input("Seed (split, negatives, training)", 0, 10_000, key=url_key("seed", 0)))
sync_url(text=text_src, root=root_opt, image=image_src, seed=seed,
         **({"encoder": text_enc["spec"]} if text_src == ENCODE and text_enc else {}))

namespace = data.cache_namespace(ds)
params = {"text": text_src, "root": root_opt, "image": image_src, "seed": seed, "preset": preset.name,
          "encoder": text_enc["spec"] if text_src == ENCODE and text_enc else None}


need_encoder = text_src == ENCODE or root_opt == "encoder" or (layout == "wide" and "neg_tier_0" in ds.items)
enc = None


def _build(progress):
    # runs as a job: the encoder was resolved on the script thread (st.cache_resource), below
    return chains_from_dataset(ds, text_space=None if text_src == ENCODE else text_src, encoder=enc,
                               root=root_opt, image_space=None if image_src == "none" else image_src, seed=seed)


chains = None
with guard():
    enc = (encoder_for(text_enc["spec"], namespace, pooling=text_enc["pooling"])
           if need_encoder and text_enc is not None else None)
    chains = jobs.computed(namespace, cached.result_key("hierarchy_chains", ds.fingerprint,
                                                        {k: v for k, v in params.items() if k != "preset"}),
                             "Embedding the chains and the root", _build)
if chains is None:
    st.stop()

report = None
with guard():
    report = jobs.computed(namespace, cached.result_key("hierarchy_report", ds.fingerprint, params),
                             "tau_d and retrieval",
                             lambda progress: hierarchy_report(chains, seed=seed, details=True, **preset.kwargs))
if report is None:
    st.stop()

st.caption(f"{chains.n_chains:,} chains, {report['n_distinct_texts']:,} distinct texts, up to {report['tiers']} tiers. "
           f"Root: {md(chains.root_source)}. Distances: Euclidean between unit vectors (d_r); angles: exterior angle "
           f"Xi_r. Image side: {md(chains.image_source) or 'none (retrieval needs one)'}.")

tab_radial, tab_chain, tab_ft = st.tabs(["Radial genericness", "Chain inspector", "RE fine-tuning"])

with tab_radial:
    a = report["all"]
    m1, m2, m3, m4, m5 = st.columns(5)
    ci = a["tau_d_ci"]
    m1.metric("tau_d", f"{a['tau_d']:.3f}" if a["tau_d"] is not None else "-",
              help="Kendall tau between each chain's radii and its tier order, averaged over all chains")
    m2.metric(f"{int(a['confidence'] * 100)}% CI", f"{ci[0]:.2f} to {ci[1]:.2f}" if ci[0] is not None else "-",
              help="percentile bootstrap over chains")
    m3.metric("monotone chains", f"{a['share_monotone']:.1%}", help="chains whose radii increase strictly")
    held = report.get("heldout", {}).get("before", {})
    retrieval_help = (f"hierarchical retrieval, {report['n_thresholds']} radius thresholds: "
                      + (f"pool of every chain's texts ({held['n_pool']:,}, {held['n_pool_distinct']:,} distinct), "
                         f"{held['n_retrieval_queries']:,} unique images of the held-out chains"
                         if held.get("retrieval_pool") == "all-chains" else
                         f"pool of the {report.get('split', {}).get('test', 0)} held-out chains' "
                         f"{held.get('n_pool', 0):,} distinct texts, one query per chain"))
    m4.metric("precision", f"{held['precision']:.3f}" if held.get("precision") is not None else "-",
              help=retrieval_help if held.get("precision") is not None else "needs an image side")
    m5.metric("recall", f"{held['recall']:.3f}" if held.get("recall") is not None else "-",
              help=retrieval_help if held.get("recall") is not None else "needs an image side")
    if held.get("precision") is not None:
        st.caption(f"Retrieval: {retrieval_help}.")
    if a.get("n_chains_with_ties"):
        by = a["tau_d_by_method"]
        st.caption(f"{a['n_chains_with_ties']} chains have tied radii: tau_d is {by['tau-b']:.4f} as tau-b and "
                   f"{by['argsort']:.4f} with the authors' argsort (ties broken by tier order); shown: "
                   f"{a['tau_method']}.")
    if a["n_undefined"]:
        st.caption(f"{a['n_undefined']} chains have all radii equal (tau undefined): skipped and counted.")
    fig = radial_plot(a["radii"], title=f"Genericness d_r per tier ({chains.n_chains:,} chains; "
                                        f"tau_d = {a['tau_d']:.3f})", seed=seed)
    st.plotly_chart(safe_figure(fig), key="hierarchy_radial", width="stretch")
    st.caption("More generic texts should lie closer to the root: boxes rising left to right, grey lines (a sample "
               "of chains) rising. Chains whose radii are all equal have no tau and are counted, not dropped silently.")
    med = pd.DataFrame({"tier": range(len(a["median_radius_per_tier"])),
                        "median d_r": a["median_radius_per_tier"]})
    export_controls("platoscope-hierarchy-radial", fig=fig, table=pd.DataFrame(
        {"chain": chains.ids, "tau": a["per_chain_tau"], **{f"d_r tier {k}": [r[k] for r in a["radii"]]
                                                            for k in range(len(a["radii"][0]))}}),
        manifest=build_manifest(view="hierarchy/radial", dataset=ds, seeds=[seed], params=params))
    st.dataframe(med, hide_index=True)

with tab_chain:
    ids = list(chains.ids)
    chain_id = st.selectbox("Chain", ids, key=url_key("chain", ids[0], ids))
    sync_url(chain=chain_id)
    c = ids.index(chain_id)
    table = chain_table(chains, c)
    st.dataframe(table, hide_index=True, width="stretch")
    rows = chains.chain_rows(c)
    E = chains.embeddings[rows]
    other_texts, other_E, other_what = contradicting_chain(chains, c)
    M, ok = exterior_angle_matrix(E, np.vstack([E, other_E]), chains.root)
    labels = [f"t{k}: {t[:24]}" for k, t in enumerate(chains.texts[rows])]
    col_labels = labels + [f"x{k}: {t[:24]}" for k, t in enumerate(other_texts)]
    heat = angle_heatmap(M, ok, labels, col_labels,
                         title=f"Exterior angles Xi_r(e, e') within the chain (t) and against {other_what} (x)")
    st.plotly_chart(safe_figure(heat), key="hierarchy_angles", width="stretch")
    st.caption(f"Small angle: e' continues outward from e (e' entails e). Undefined cells (e' = e, or e = root): "
               f"{int((~ok).sum())}, skipped and counted.")
    coords = chain_pca(np.vstack([E, other_E]), chains.root)
    groups = ["root"] + ["this chain"] * len(E) + ["contrast"] * len(other_E)
    view = chain_view(coords, ["root"] + list(chains.texts[rows]) + list(other_texts), groups,
                      title="PCA of the chain, the contrast and the root")
    st.plotly_chart(safe_figure(view), key="hierarchy_pca", width="stretch")
    export_controls("platoscope-hierarchy-chain", fig=heat, table=table,
                    manifest=build_manifest(view="hierarchy/chain", dataset=ds, seeds=[seed],
                                            params={**params, "chain": chain_id}))

with tab_ft:
    if preset.is_preset:
        st.caption("The authors fine-tune the whole text tower of an open_clip model (AdamW lr 1e-7, weight decay "
                   "0.01, batch 8, one epoch): platoscope hierarchy FILE --encoder open_clip:MODEL:TAG --preset "
                   "paper-c --finetune. This view trains the project's own adapter, with the authors' RE loss.")
    st.write("Train a light residual-linear adapter on the frozen text embeddings with the RE loss "
             "(10 L_p + L_e + L_m) on training chains with same-tier negatives, early stopping on validation "
             "chains; numbers below are on held-out chains only.")
    epochs = int(st.number_input("Max epochs", 1, 500, key=url_key("epochs", 100)))
    train_now = st.toggle("Train the adapter", key=url_key("ft", False))
    sync_url(epochs=epochs, ft=bool(train_now))
    if train_now:
        ft = None
        with guard():
            ft = jobs.computed(
                namespace, cached.result_key("hierarchy_ft", ds.fingerprint, params, epochs),
                "RE fine-tuning",
                lambda progress: hierarchy_report(chains, finetune=True, seed=seed, details=True, **preset.kwargs,
                                                  tuner_params={"max_epochs": epochs, **preset.settings.loss_kwargs()},
                                                  progress=progress))
        if ft is not None:
            before, after = ft["heldout"]["before"], ft["heldout"]["after"]
            tr = ft["training"]
            st.caption(f"{ft['split']['train']} training, {ft['split']['val']} validation, {ft['split']['test']} "
                       f"held-out chains; {tr['seconds']:.1f} s on {tr['device']}, best epoch {tr['best_epoch']} "
                       f"of {tr['epochs_run']}; negatives: {tr['negatives']}.")
            lo = min(min(v for r in s["radii"] for v in r if v is not None) for s in (before, after))
            hi = max(max(v for r in s["radii"] for v in r if v is not None) for s in (before, after))
            pad = 0.05 * (hi - lo + 1e-9)
            left, right = st.columns(2)
            fb = radial_plot(before["radii"], title=f"Before: tau_d = {before['tau_d']:.3f}", seed=seed,
                             y_range=(lo - pad, hi + pad))
            fa = radial_plot(after["radii"], title=f"After RE: tau_d = {after['tau_d']:.3f}", seed=seed,
                             y_range=(lo - pad, hi + pad))
            left.plotly_chart(safe_figure(fb), key="hierarchy_before", width="stretch")
            right.plotly_chart(safe_figure(fa), key="hierarchy_after", width="stretch")
            bars = before_after_bars(before, after, title="Held-out chains, before vs after")
            st.plotly_chart(safe_figure(bars), key="hierarchy_bars", width="stretch")
            st.plotly_chart(safe_figure(training_curve(tr["history"], title="RE loss per epoch")), key="hierarchy_curve",
                            width="stretch")
            summary = pd.DataFrame([{"when": w, **{k: s.get(k) for k in ("tau_d", "share_monotone", "precision",
                                                                           "recall")}}
                                    for w, s in (("before", before), ("after", after))])
            st.dataframe(summary, hide_index=True)
            export_controls("platoscope-hierarchy-finetune", fig=bars, table=summary,
                            manifest=build_manifest(view="hierarchy/finetune", dataset=ds, seeds=[seed],
                                                    params={**params, "epochs": epochs,
                                                            "tuner": tr["params"]}))
