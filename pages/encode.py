"""Encode: embed your captions (and images) with MiniLM (offline) or an open_clip model, add them as spaces."""
import io
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.dataset import Dataset, Space, guess_modality
from core.encode import IMAGE_COLUMNS, encode_dataset, read_captions, spaces_info
from core.encoders import list_images, parse_model_spec
from core.errors import DataError
from ui import data
from ui.encoders import encoder_for
from core.export import build_manifest
from ui.widgets import export_controls, guard, page_header, show_error, sync_url, url_key

page_header("Encode", "encode",
            "Turn a captions CSV and/or images into embedding spaces. MiniLM runs offline; an open_clip model "
            "downloads its weights once (needs internet the first time).")

st.markdown("**1. Encoder**")
c1, c2, c3 = st.columns([1, 1, 1])
KINDS = ["MiniLM (all-MiniLM-L6-v2, offline)", "open_clip"]
kind = c1.radio("Model", KINDS, key=url_key("model", KINDS[0], KINDS))
if kind.startswith("MiniLM"):
    spec = "minilm"
    layers = c2.checkbox("Per-layer outputs (layers 1..6)", key=url_key("layers", False))
    model = tag = None
else:
    model = c2.text_input("open_clip model", key=url_key("clip_model", "ViT-B-32"))
    tag = c3.text_input("pretrained tag ('none' = random weights, plumbing only)", key=url_key("clip_tag", "openai"))
    spec = f"open_clip:{model}:{tag}"
    layers = False
tokens = st.checkbox("Also token outputs (n x T x d token sets, for the Point sets view)", key=url_key("tokens", False))
sync_url(model=kind, layers=bool(layers), tokens=bool(tokens), **({"clip_model": model, "clip_tag": tag} if model else {}))

st.markdown("**2. Inputs**")
u1, u2 = st.columns(2)
csv_file = u1.file_uploader("Captions CSV (UTF-8, with a caption column; optional id and image columns)",
                            type=["csv"], key="enc_csv")
image_files = u2.file_uploader("Images (files or a .zip)", type=["jpg", "jpeg", "png", "bmp", "gif", "webp",
                                                                 "tif", "tiff", "zip"],
                               accept_multiple_files=True, key="enc_images")

table = None
column = "caption"
image_column = None
if csv_file is not None:
    try:
        spool = data.scratch_copy(csv_file)  # a private temporary copy: never (re)creates the session folder
        header = pd.read_csv(spool, nrows=0, dtype=str, encoding_errors="replace").columns.tolist()
        column = st.selectbox("Caption column", header,
                              index=header.index("caption") if "caption" in header else 0, key="enc_column")
        table = read_captions(spool, column, display_name=csv_file.name)
        if image_files:
            choices = [c for c in header if c != column]
            default = next((i for i, c in enumerate(choices) if c in IMAGE_COLUMNS), 0)
            image_column = st.selectbox("Column naming each row's image", choices, index=default,
                                        key="enc_image_column") if choices else None
        st.caption(f"{len(table):,} captions read from {csv_file.name}.")
    except DataError as exc:
        show_error(exc)
        table = None
    except Exception as exc:  # noqa: BLE001 - e.g. a CSV pandas cannot parse
        show_error(DataError(f"could not read the CSV ({exc})", file=csv_file.name,
                             hint="save it as a UTF-8 CSV with a header row"))
        table = None
    finally:
        data.drop_scratch(csv_file)

st.markdown("**3. Run**")
if st.button("Encode", type="primary", key="enc_go", disabled=table is None and not image_files):
    namespace = data.session_namespace()
    try:
        parse_model_spec(spec)
        images = list_images([(f.name, f.getvalue()) for f in image_files]) if image_files else None
        with st.status(f"Encoding with {spec} ...", expanded=True) as status:
            bars = {}

            def _bar(label):
                def progress(done, total):
                    if label not in bars:
                        bars[label] = st.progress(0.0, text=label)
                    bars[label].progress(min(1.0, done / max(total, 1)), text=f"{label}: {done}/{total}")
                return progress

            encoder = encoder_for(spec, namespace)
            res = encode_dataset(encoder, table, column, images, image_column=image_column, layers=layers,
                                 tokens=tokens, progress_text=_bar("captions"), progress_images=_bar("images"),
                                 table_name=csv_file.name if csv_file is not None else "captions")
            status.update(label=f"Encoded {len(res['ids']):,} items", state="complete", expanded=False)
        inputs = []
        if csv_file is not None:
            from core.cache import sha256_bytes
            inputs.append({"name": csv_file.name, "sha256": sha256_bytes(csv_file.getvalue()), "bytes": csv_file.size})
        if images is not None:
            inputs.append({"name": "images", "sha256": images.content_key(), "files": len(images.names)})
        st.session_state["enc_result"] = {"res": res, "spec": spec, "source": csv_file.name if csv_file else "images",
                                          "random": getattr(encoder, "pretrained", "x") is None,
                                          "inputs": inputs, "params": {"model": spec, "layers": bool(layers),
                                                                       "tokens": bool(tokens), "column": column}}
    except DataError as exc:
        show_error(exc)
    except Exception as exc:  # noqa: BLE001
        show_error(exc)

result = st.session_state.get("enc_result")
if result is not None:
    res = result["res"]
    st.success(f"{len(res['ids']):,} items encoded with {result['spec']}.")
    if result["random"]:
        st.warning("Random weights: these embeddings test the plumbing only; never report results from them.")
    st.dataframe(pd.DataFrame(spaces_info(res["arrays"])), hide_index=True)
    if res["skipped_images"]:
        st.warning(f"{len(res['skipped_images'])} image(s) skipped:")
        st.dataframe(pd.DataFrame(res["skipped_images"]), hide_index=True)
    if res["dropped_rows"]:
        st.warning(f"{len(res['dropped_rows'])} row(s) dropped:")
        st.dataframe(pd.DataFrame(res["dropped_rows"]), hide_index=True)

    def _npz() -> bytes:
        buf = io.BytesIO()
        np.savez(buf, id=np.array(res["ids"], dtype=str), **res["arrays"])
        return buf.getvalue()

    export_controls("platoscope-encode", table=pd.DataFrame(spaces_info(res["arrays"])),
                    manifest=build_manifest(view="encode", params=result.get("params", {}),
                                            inputs=result.get("inputs", [])))
    d1, d2, d3 = st.columns(3)
    d1.download_button("Download .npz", data=_npz, file_name=f"{Path(result['source']).stem}-embeddings.npz",
                       mime="application/octet-stream", key="enc_download", on_click="ignore")
    if d2.button("Open as a new dataset", key="enc_new"):
        with guard():
            ds = data.dataset_from_arrays(res["ids"], res["arrays"], name=f"encoded {Path(result['source']).stem}")
            data.select(f"upload:{ds.name}")
            st.rerun()
    current = data.current_dataset()
    if current is not None and set(current.ids) == set(res["ids"]) and d3.button(
            f"Add to '{current.name}'", key="enc_add"):
        with guard():
            ds = data.dataset_with_spaces(current, res["ids"], res["arrays"])
            data.select(f"upload:{ds.name}")
            st.rerun()
