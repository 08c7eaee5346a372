"""Query: type a text (or pick an item, or give an image) and retrieve the items of another modality through a
fitted alignment (paper A's live retrieval)."""
import time

import numpy as np
import pandas as pd
import streamlit as st

from core.errors import DataError
from core.export import build_manifest
from core.geometry import item_point_clouds
from core.retrieval import (CrossModalRetriever, check_text_encoder, embed_query_text, expand_query,
                            default_space, text_encoder_spec)
from ui import cached, data, jobs
from ui.fits import pair_moments
from ui.plots_geosem import AGREE, DISAGREE, QUERY, cloud_silhouettes, cloud_thumbnails, short
from ui.widgets import export_controls, guard, item_picker, page_header, sync_url, url_key
from ui.text import md, safe_figure

page_header("Query", "query",
            "Type a description: it is embedded by the text encoder, mapped through the fitted alignment into the "
            "other modality, and the best-scoring items come back with their scores.")

ds = data.current_dataset()
vec = ds.vector_space_names() if ds is not None else []
if ds is None or len(vec) < 2:
    st.info("This view needs a dataset with at least two vector spaces (e.g. text and 3D): pick the demo or upload "
            "files in the sidebar.")
    st.stop()


METHODS = {"cca_affine": "CCA + affine", "cca_local_cka": "CCA + local CKA", "affine": "affine"}
c1, c2, c3, c4, c5 = st.columns([2, 2, 2, 1, 1])
source = c1.selectbox("Query space (from)", vec, key=url_key("from", default_space(ds, "text"), vec))
targets = [n for n in vec if n != source]
target = c2.selectbox("Retrieve from (to)", targets, key=url_key("to", default_space(ds, "3d", source), targets))
method = c3.selectbox("Alignment", list(METHODS), format_func=METHODS.get,
                      key=url_key("method", "cca_affine", list(METHODS)))
dim = int(c4.number_input("Subspace dim", 1, 1024, key=url_key("dim", 50)))
top = int(c5.number_input("Results", 1, 50, key=url_key("k", 10)))
sync_url(**{"from": source, "to": target, "method": method, "dim": dim, "k": top})

namespace = data.cache_namespace(ds)
labels = ds.items["label"].astype(str).to_numpy() if "label" in ds.items.columns else None
captions = (ds.items["caption"].astype(str).to_numpy() if "caption" in ds.items.columns
            else ds.items["id"].to_numpy())
ids = list(ds.ids)

retriever = None
with guard():
    rkey = cached.result_key("query_alignment", ds.fingerprint, source, target, method, dim)
    retriever = jobs.computed(
        namespace, rkey, f"Fitting {METHODS[method]} ({source} -> {target}) once for this dataset",
        lambda progress: CrossModalRetriever(method, k=dim, index_namespace=namespace).fit(
            ds[source].vectors(), ds[target].vectors(), moments=pair_moments(ds, source, target, namespace)))
if retriever is None:
    st.stop()
st.caption(f"{METHODS[method]}" + (f" (k = {retriever.aligner_.k})" if retriever.aligner_.uses_k else "")
           + f" fitted on all {retriever.n_anchors_:,} paired items; scores are {retriever.score_kind}; "
           f"{retriever.n_items_:,} items of '{target}' indexed.")

spec = text_encoder_spec(ds[source])
tab_text, tab_item, tab_image = st.tabs(["Text", "Item", "Image"])
query_vec, query_desc, exclude = None, None, None

with tab_text:
    text = st.text_input("Describe an object (Enter searches)", key=url_key("q", ""), placeholder="e.g. a tall lamp")
    tc1, tc2 = st.columns([1, 3])
    submitted = tc1.button("Search", type="primary", key="query_search")
    expand = tc2.number_input(
        "Expand with the query's N nearest source items (0 = off)", 0, 100, key=url_key("expand", 10),
        help="The query becomes the mean of its N nearest items of the query space before it is mapped: a linear "
             "alignment fitted on one caption style maps short, out-of-style text poorly.")
    if text.strip() or submitted:
        with guard():
            if not text.strip():
                raise DataError("the query is empty", hint="type a few words, e.g. 'a tall lamp'")
            if spec is None:
                raise DataError(f"the space '{source}' has no text encoder, so a typed query cannot be placed in it",
                                hint="pick a MiniLM / open_clip text space as the query space, or use the Item tab")
            from ui.encoders import encoder_for
            ckey = cached.result_key("encoder_check", ds.fingerprint, source, spec)
            # loading the encoder (once per server) and re-encoding a few captions run as a job
            checked = jobs.computed(namespace, ckey, f"Loading {spec} and checking that it made '{source}'",
                                    lambda progress: check_text_encoder(encoder_for(spec, namespace),
                                                                        ds[source].vectors(), list(captions),
                                                                        space_name=f"the space '{source}'"))
            if checked is not None:   # else its progress box (or its error) is drawn here
                encoder = encoder_for(spec, namespace)
                t0 = time.perf_counter()
                query_vec = expand_query(embed_query_text(text, encoder), ds[source].vectors(), int(expand),
                                         index_key=ds.space_fingerprint(source), index_namespace=namespace)
                query_desc = f'"{text.strip()}"' + (f" (expanded with its {int(expand)} nearest '{source}' items)"
                                                     if int(expand) else "")
                st.session_state["query_embed_s"] = time.perf_counter() - t0
                sync_url(q=text, expand=int(expand))

with tab_item:
    pick = item_picker("Query with an item of the query space", ids, captions, "query_item", none_label="(none)")
    if pick is not None and query_vec is None:
        r = ids.index(pick)
        query_vec = np.asarray(ds[source].vectors()[r:r + 1], dtype=np.float64)
        query_desc = f"item {pick} of '{source}'" + (f" ({labels[r]})" if labels is not None else "")
        exclude = [r]

with tab_image:
    if not spec or not spec.startswith("open_clip:"):
        st.info("Image queries need an open_clip image tower: the query space must be an open_clip text space "
                "(encoded on the Encode page with an open_clip model). This dataset's query space "
                f"'{md(source)}' comes from {md(spec) or 'no known encoder'}.")
    else:
        image = st.file_uploader("An image", type=["png", "jpg", "jpeg", "webp"], key="query_image")
        if image is not None and query_vec is None:
            with guard():
                from core.encoders import list_images
                from ui.encoders import encoder_for
                enc = encoder_for(spec, namespace)
                emb = enc.encode_images(list_images([(image.name, image.getvalue())]))["embedding"]
                query_vec = np.asarray(emb, dtype=np.float64)
                query_desc = f"image {image.name}"

if query_vec is None:
    st.info("Type a description and press Search (or Enter), pick an item, or give an image.")
    st.stop()

res = None
with guard():
    t0 = time.perf_counter()
    idx, scores = retriever.query(query_vec, top, exclude=exclude)
    search_s = time.perf_counter() - t0
    res = (idx[0], scores[0])
if res is None:
    st.stop()
idx, scores = res
embed_s = st.session_state.get("query_embed_s", 0.0) if query_desc and query_desc.startswith('"') else 0.0
st.markdown(f"**{md(query_desc)}** -> top {len(idx)} of '{md(target)}'")
st.caption(f"Embedded in {embed_s * 1000:.0f} ms, searched {retriever.n_items_:,} items in {search_s * 1000:.0f} ms.")
table = pd.DataFrame({"rank": range(1, len(idx) + 1), "id": [ids[r] for r in idx],
                      **({"label": labels[idx]} if labels is not None else {}),
                      "score": np.round(scores, 4), "caption": captions[idx]})
if labels is not None:
    counts = table["label"].value_counts()
    st.markdown("**Categories of the results:** " + ", ".join(f"{md(k)} x{v}" for k, v in counts.items()))
clouds = item_point_clouds(ds)
fig = None
if clouds is not None:
    # an item query has a category: green = same as the query item's, red = another; text queries stay neutral
    colors = ([AGREE if labels[r] == labels[exclude[0]] else DISAGREE for r in idx]
              if labels is not None and exclude else [QUERY] * len(idx))
    titles = [f"{i + 1}. {short(captions[r], 30)} ({s:.2f})" for i, (r, s) in enumerate(zip(idx, scores))]
    if st.toggle("Rotatable 3D thumbnails (slower to draw)", key="query_3d"):
        fig = cloud_thumbnails([clouds[r] for r in idx], titles, colors=colors, cols=5)
    else:
        fig = cloud_silhouettes([clouds[r] for r in idx], titles, colors=colors, cols=5)
    st.plotly_chart(safe_figure(fig), key="query_thumbs", width="stretch")
elif "image_url" in ds.items.columns:
    st.image([str(ds.items["image_url"].iloc[r]) for r in idx], width=140,
             caption=[short(captions[r], 40) for r in idx])
else:
    st.caption("These items carry no point clouds or images: results are listed without thumbnails.")
st.dataframe(table, hide_index=True, width="stretch")
export_controls("platoscope-query", fig=fig, table=table,
                manifest=build_manifest(view="query/results", dataset=ds, seeds=[],
                                        params={"query": query_desc, "from": source, "to": target, "method": method,
                                                "dim": dim, "k": top, "encoder": spec}))
