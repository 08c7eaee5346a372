"""Encode: embed captions, images or point clouds with any encoder (MiniLM offline, Hugging Face, sentence-transformers,
timm, torchvision, open_clip, a Python module), every layer if asked, and add the spaces to a dataset."""
import io
from pathlib import Path

import pandas as pd
import streamlit as st

from core.encode import IMAGE_COLUMNS, encoded_arrays, read_captions, run_encoding, spaces_info
from core.encoders import SPEC_EXAMPLES, list_images, parse_model_spec
from core.errors import DataError
from core.export import build_manifest
from ui import cached, data, jobs
from ui.encoders import allowed_python_encoders, check_allowed, current_point_clouds, encoder_for
from ui.widgets import export_controls, guard, page_header, show_error, sync_url, url_key
from ui.text import md

page_header("Encode", "encode",
            "Turn captions, images or point clouds into embedding spaces, with every layer if you like, and add them "
            "to the current dataset: the Similarity view's 'Layer by layer' then compares every layer of one model "
            "with every layer of another. MiniLM runs offline; other models download their weights once.")

# -- 1. encoder ---------------------------------------------------------------------------------------------------
FAMILIES = {  # label -> (family, input kinds, default model)
    "MiniLM (all-MiniLM-L6-v2, offline)": ("minilm", ("text",), ""),
    "Hugging Face transformers (hf:)": ("hf", ("text",), "bert-base-uncased"),
    "sentence-transformers (st:)": ("st", ("text",), "sentence-transformers/all-mpnet-base-v2"),
    "timm image model (timm:)": ("timm", ("image",), "vit_small_patch14_dinov2.lvd142m"),
    "torchvision image model": ("torchvision", ("image",), "resnet50"),
    "open_clip": ("open_clip", ("text", "image"), "ViT-B-32"),
    "Python module (python:)": ("python", None, ""),
}
KINDS = list(FAMILIES)
st.markdown("**1. Encoder**")
c1, c2, c3 = st.columns([1.2, 1.4, 1])
kind_label = c1.radio("Model", KINDS, key=url_key("model", KINDS[0], KINDS))
family, input_kinds, default_model = FAMILIES[kind_label]
pooling, model, tag = "mean", None, None
if family == "minilm":
    spec = "minilm"
elif family == "python":
    options = allowed_python_encoders()
    spec = c2.selectbox("Module (python:MODULE:FACTORY)", options, key=url_key("py_spec", options[0], options),
                        help="The app runs only the shipped PointNet and the factories listed in "
                             "PLATOSCOPE_PYTHON_ENCODERS; any other module runs with `platoscope encode` on your "
                             "machine.")
    model = spec
elif family == "open_clip":
    model = c2.text_input("open_clip model", key=url_key("clip_model", default_model))
    tag = c3.text_input("pretrained tag ('none' = random weights, plumbing only)", key=url_key("clip_tag", "openai"))
    spec = f"open_clip:{model}:{tag}"
else:
    model = c2.text_input({"hf": "Model id or local folder", "st": "Model id or local folder",
                           "timm": "timm model name (pretrained tag after a dot)",
                           "torchvision": "torchvision model"}[family],
                          key=url_key(f"{family}_model", default_model),
                          help=f"e.g. {SPEC_EXAMPLES[family]}")
    if family == "hf":
        pooling = c3.selectbox("Pooling", ["mean", "cls", "last", "max"], key=url_key("pooling", "mean"),
                               help="how token states become one vector: mean (encoders), cls (BERT [CLS]), last "
                                    "(decoder models)")
    if family in ("timm", "torchvision"):
        tag = "none" if c3.checkbox("Random weights (plumbing only)", key=url_key("random", False)) else None
    spec = f"{family}:{model}" + (":none" if tag == "none" else "")

o1, o2 = st.columns(2)
want_layers = o1.checkbox("Per-layer outputs (<space>_layerK)", key=url_key("layers", False),
                          help="every block's output, pooled like the final embedding; Similarity -> Layer by layer "
                               "compares them")
layer_text = o1.text_input("Which layers (blank = all; e.g. 1,4,6)", key=url_key("which", ""),
                           disabled=not want_layers)
tokens = o2.checkbox("Also token / patch / point features (token sets)", key=url_key("tokens", False),
                     help="n x T x d with a mask: word pieces, image patches or points, for the Point sets view")
layers = (layer_text.strip() or "all") if want_layers else False
sync_url(model=kind_label, layers=bool(want_layers), which=layer_text, tokens=bool(tokens), pooling=pooling,
         **({f"{family}_model": model} if family not in ("minilm", "python", "open_clip") else {}),
         **({"clip_model": model, "clip_tag": tag} if family == "open_clip" else {}),
         **({"py_spec": spec} if family == "python" else {}))

encoder_error = None
try:
    parse_model_spec(spec)
    check_allowed(spec)
    if input_kinds is None:  # a python: module says what it takes
        input_kinds = encoder_for(spec, data.session_namespace()).input_kinds
except DataError as exc:
    encoder_error = exc
    show_error(exc)
    input_kinds = ()

# -- 2. inputs ----------------------------------------------------------------------------------------------------
st.markdown("**2. Inputs**")
current = data.current_dataset()
table, column, image_column, images_files, points = None, "caption", None, None, None
source_name = "encoded"
if "text" in input_kinds:
    sources = ["a captions CSV"]
    if current is not None and "caption" in current.items.columns:
        sources.append(f"the captions of '{md(current.name)}'")
    text_source = st.radio("Texts", sources, key="enc_text_source", horizontal=True)
    if text_source.startswith("the captions of") and current is not None:
        table = pd.DataFrame({"id": current.ids.astype(str), "caption": current.items["caption"].astype(str)})
        source_name = current.name
        st.caption(f"{len(table):,} captions of '{md(current.name)}'; the spaces join it directly.")
    else:
        csv_file = st.file_uploader("Captions CSV (UTF-8, with a caption column; optional id and image columns)",
                                    type=["csv"], key="enc_csv")
        if csv_file is not None:
            source_name = csv_file.name
            try:
                spool = data.scratch_copy(csv_file)  # a private temporary copy: never (re)creates the session folder
                header = pd.read_csv(spool, nrows=0, dtype=str, encoding_errors="replace").columns.tolist()
                column = st.selectbox("Caption column", header,
                                      index=header.index("caption") if "caption" in header else 0, key="enc_column")
                table = read_captions(spool, column, display_name=csv_file.name)
                if "image" in input_kinds and st.session_state.get("enc_images"):
                    choices = [c for c in header if c != column]
                    default = next((i for i, c in enumerate(choices) if c in IMAGE_COLUMNS), 0)
                    image_column = st.selectbox("Column naming each row's image", choices, index=default,
                                                key="enc_image_column") if choices else None
                st.caption(f"{len(table):,} captions read from {md(csv_file.name)}.")
            except DataError as exc:
                show_error(exc)
                table = None
            except Exception as exc:  # noqa: BLE001 - e.g. a CSV pandas cannot parse
                show_error(DataError(f"could not read the CSV ({exc})", file=csv_file.name,
                                     hint="save it as a UTF-8 CSV with a header row"))
                table = None
            finally:
                data.drop_scratch(csv_file)
if "image" in input_kinds:
    images_files = st.file_uploader("Images (files or a .zip)", type=["jpg", "jpeg", "png", "bmp", "gif", "webp",
                                                                      "tif", "tiff", "zip"],
                                    accept_multiple_files=True, key="enc_images") or None
    if images_files and table is None:
        source_name = images_files[0].name if len(images_files) == 1 else "images"
if "pointcloud" in input_kinds:
    demo_clouds = current_point_clouds(current)
    sources = (["the point clouds of the current dataset"] if demo_clouds is not None else []) + ["upload"]
    pc_source = st.radio("Point clouds", sources, key="enc_pc_source", horizontal=True)
    if pc_source == "upload":
        pc_files = st.file_uploader("Point clouds: an .npz / .npy (n x P x 3), a .zip, or .ply / .xyz / .npy files",
                                    type=["npz", "npy", "zip", "ply", "xyz", "txt"], accept_multiple_files=True,
                                    key="enc_points")
        if pc_files:
            from core.pointclouds import read_point_clouds
            try:
                points = read_point_clouds([(f.name, f.getvalue()) for f in pc_files])
                source_name = pc_files[0].name if len(pc_files) == 1 else "point clouds"
                st.caption(f"{len(points):,} point clouds read"
                           + (f"; {len(points.skipped)} files skipped" if points.skipped else "") + ".")
            except DataError as exc:
                show_error(exc)
                points = None
    else:
        points = demo_clouds
        source_name = current.name
        st.caption(f"{len(points):,} point clouds of '{md(current.name)}' (one per item); the spaces join it directly.")

# -- 3. run -------------------------------------------------------------------------------------------------------
st.markdown("**3. Run**")
ready = encoder_error is None and (table is not None or bool(images_files) or points is not None)
namespace = data.session_namespace()
# Encoding runs as a background job of this session (private: uploads): progress, Cancel, and a page switch or a
# reload reattaches; the finished result moves into the session below.
if st.button("Encode", type="primary", key="enc_go", disabled=not ready):
    st.session_state.pop("enc_error", None)
    try:
        images = list_images([(f.name, f.getvalue()) for f in images_files]) if images_files else None
        inputs = []
        if table is not None:
            from core.cache import sha256_texts
            inputs.append({"name": source_name, "sha256": sha256_texts(table[column].tolist()),
                           "rows": len(table)})
        if images is not None:
            inputs.append({"name": "images", "sha256": images.content_key(), "files": len(images.names)})
        if points is not None:
            inputs.append({"name": "point clouds", "sha256": points.content_key(), "clouds": len(points)})
        params = {"model": spec, "pooling": pooling, "layers": layers, "tokens": bool(tokens), "column": column}
        key = cached.result_key("encode", params, image_column, source_name, inputs)

        def compute(job, spec=spec, pooling=pooling, table=table, column=column, images=images, points=points,
                    image_column=image_column, layers=layers, tokens=tokens, source_name=source_name):
            def progress(done, total, stage):  # the job-style callback of core.encode.run_encoding
                job.report(done, total, stage)
            encoder = encoder_for(spec, namespace, pooling=pooling)
            return run_encoding(encoder, table=table, column=column, images=images, points=points,
                                image_column=image_column, layers=layers, tokens=tokens, table_name=source_name,
                                progress=progress)

        st.session_state["enc_job"] = {"key": key, "compute": compute, "spec": spec, "source": source_name,
                                       "inputs": inputs, "params": params}
        st.session_state.pop("enc_result", None)
    except DataError as exc:              # e.g. a refused image archive: kept on screen until the next run
        st.session_state.pop("enc_job", None)
        st.session_state["enc_error"] = exc
if st.session_state.get("enc_error") is not None:
    show_error(st.session_state["enc_error"])

pending = st.session_state.get("enc_job")
if pending is not None:
    with guard():
        res = jobs.result(namespace, pending["key"], f"Encoding with {pending['spec']}", pending["compute"])
        if res is not None:
            st.session_state["enc_result"] = {
                "res": res, "spec": pending["spec"], "source": pending["source"],
                "random": any(d["info"].get("random_weights") for d in res["spaces"].values()),
                "inputs": pending["inputs"], "params": pending["params"]}
            st.session_state.pop("enc_job", None)
            st.caption(f"Encoded {len(res['ids']):,} items in {res['seconds']:.1f} s "
                       f"({res['items_per_second']:,.0f} items/s).")

result = st.session_state.get("enc_result")
if result is not None:
    res = result["res"]
    st.success(f"{len(res['ids']):,} items encoded with {md(result['spec'])}.")
    if result["random"]:
        st.warning("Random weights: these embeddings test the plumbing only; never report results from them.")
    info_table = pd.DataFrame(spaces_info(res["arrays"], res.get("spaces")))
    st.dataframe(info_table, hide_index=True)
    for label, key in (("image(s)", "skipped_images"), ("point-cloud file(s)", "skipped_points")):
        if res.get(key):
            st.warning(f"{len(res[key])} {label} skipped:")
            st.dataframe(pd.DataFrame(res[key]), hide_index=True)
    if res["dropped_rows"]:
        st.warning(f"{len(res['dropped_rows'])} row(s) dropped:")
        st.dataframe(pd.DataFrame(res["dropped_rows"]), hide_index=True)

    def _npz() -> bytes:
        import numpy as np
        buf = io.BytesIO()
        np.savez(buf, **encoded_arrays(res))
        return buf.getvalue()

    export_controls("platoscope-encode", table=info_table,
                    manifest=build_manifest(view="encode", params=result.get("params", {}),
                                            inputs=result.get("inputs", [])))
    arrays = {k: v for k, v in encoded_arrays(res).items() if k != "id"}
    d1, d2, d3 = st.columns(3)
    d1.download_button("Download .npz", data=_npz, file_name=f"{Path(result['source']).stem}-embeddings.npz",
                       mime="application/octet-stream", key="enc_download", on_click="ignore")
    if d2.button("Open as a new dataset", key="enc_new"):
        with guard():
            ds = data.dataset_from_arrays(res["ids"], arrays, name=f"encoded {Path(result['source']).stem}")
            data.select(f"upload:{ds.name}")
            st.rerun()
    current = data.current_dataset()
    if current is not None and set(map(str, current.ids)) == set(map(str, res["ids"])) and d3.button(
            f"Add to '{md(current.name)}'", key="enc_add"):
        with guard():
            ds = data.dataset_with_spaces(current, res["ids"], arrays)
            data.select(f"upload:{ds.name}")
            st.session_state["enc_added"] = [s["name"] for s in spaces_info(res["arrays"])]
            st.rerun()
    elif current is not None and set(map(str, current.ids)) != set(map(str, res["ids"])):
        d3.caption(f"The items differ from those of '{md(current.name)}', so the spaces cannot join it; open them as a "
                   "new dataset or download them.")
    if st.session_state.get("enc_added"):
        st.info("Added " + ", ".join(st.session_state["enc_added"][:6])
                + (" ..." if len(st.session_state["enc_added"]) > 6 else "")
                + ". Open Similarity -> Layer by layer to compare every layer with another model's.")
        st.page_link("pages/similarity.py", label="Similarity: layer by layer", icon=":material/grid_on:")
