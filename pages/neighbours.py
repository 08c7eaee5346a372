"""Neighbours: an item's nearest neighbours in the original space beside those in the CCA subspace, and how a
space's distances follow geometry before and after alignment (paper A, section 3)."""
import io

import numpy as np
import pandas as pd
import streamlit as st

from core.errors import DataError
from core.export import build_manifest
from core.geometry import check_distance_matrix, dataset_geometry_vs_semantics, item_point_clouds
from core.retrieval import default_space, neighbours_before_after, subspace_cca, subspace_index_key
from ui import cached, data, jobs
from ui.fits import pair_moments
from ui.maps import draw_map, pca_map_or_progress
from ui.plots_geosem import AGREE, DISAGREE, QUERY, cloud_thumbnails, distance_scatter, short
from ui.widgets import export_controls, guard, item_picker, page_header, sync_url, url_key
from ui.text import md, safe_figure

page_header("Neighbours", "neighbours",
            "Nearest neighbours of one item in the original space and in the CCA subspace shared with a partner "
            "space; and whether distances follow geometry or meaning (paper A: the original 3D space groups by "
            "shape, the subspace by meaning).")

ds = data.current_dataset()
vec = ds.vector_space_names() if ds is not None else []
if ds is None or len(vec) < 2:
    st.info("This view needs a dataset with at least two vector spaces (e.g. 3D and text): pick the demo or upload "
            "files in the sidebar.")
    st.stop()


c1, c2, c3, c4, c5 = st.columns([2, 2, 1, 1, 1])
space = c1.selectbox("Space", vec, key=url_key("space", default_space(ds, "3d"), vec))
partners = [n for n in vec if n != space]
partner = c2.selectbox("Aligned with (partner)", partners, key=url_key("partner", default_space(ds, "text", space), partners))
k = int(c3.number_input("Neighbours", 1, 20, key=url_key("k", 5)))
dim = int(c4.number_input("Subspace dim", 1, 1024, key=url_key("dim", 50)))
metric = c5.selectbox("Distance", ["cosine", "euclidean"], key=url_key("metric", "cosine", ["cosine", "euclidean"]))

labels = ds.items["label"].astype(str).to_numpy() if "label" in ds.items.columns else None
captions = (ds.items["caption"].astype(str).to_numpy() if "caption" in ds.items.columns
            else ds.items["id"].to_numpy())
ids = list(ds.ids)

# -- the query item: search by caption, or click it on the map --------------------------------------------------
if "nb_item" not in st.session_state:
    st.session_state["nb_item"] = ids[0] if str(st.query_params.get("item", "")) not in ids else st.query_params["item"]
if "nb_pending" in st.session_state:   # picked on the map (drawn further down) in the previous run
    st.session_state["nb_item"] = st.session_state.pop("nb_pending")
item = item_picker("Query item", ids, captions, "nb_item")
row = ids.index(item)
sync_url(space=space, partner=partner, k=k, dim=dim, metric=metric, item=item)

namespace = data.cache_namespace(ds)
clouds = None
with guard():
    clouds = item_point_clouds(ds)

res = None
with guard():
    # the CCA subspace is fitted once per (space, partner, dim); each item's neighbours are then a search only
    index_key = f"{ds.space_fingerprint(space)}:{ds.space_fingerprint(partner)}"
    ckey = cached.result_key("neighbours_cca", ds.fingerprint, space, partner, dim)
    cca = jobs.computed(namespace, ckey, f"Fitting the CCA subspace of '{space}' with '{partner}'",
                        lambda progress: subspace_cca(ds[space].vectors(), ds[partner].vectors(), dim=dim,
                                                      moments=pair_moments(ds, space, partner, namespace)))
    if cca is not None:
        key = cached.result_key("neighbours", ds.fingerprint, space, partner, dim, metric, k, row)
        res = jobs.computed(namespace, key, "Finding the neighbours",
                            lambda progress: neighbours_before_after(
                                ds[space].vectors(), None, row, k, metric=metric, cca=cca, index_key=index_key,
                                subspace_key=subspace_index_key(index_key, cca), index_namespace=namespace))

if res is not None:
    q_label = labels[row] if labels is not None else None
    st.markdown(f"**Query:** {md(item)}" + (f" ({md(q_label)})" if q_label else "") + f" - {md(captions[row])}")
    cols = st.columns(2)
    tables = {}
    for col, side, title in ((cols[0], "original", f"Original space '{space}'"),
                             (cols[1], "subspace", f"CCA subspace with '{partner}' (k = {res['k']})")):
        nb_rows = res[side]["rows"]
        agree = [labels[r] == q_label for r in nb_rows] if labels is not None else None
        table = pd.DataFrame({"rank": range(1, len(nb_rows) + 1), "id": [ids[r] for r in nb_rows],
                              **({"label": [labels[r] for r in nb_rows]} if labels is not None else {}),
                              **({"same category": ["yes" if a else "no" for a in agree]} if agree else {}),
                              f"{metric} distance": np.round(res[side]["distances"], 4),
                              "caption": [captions[r] for r in nb_rows]})
        tables[side] = table
        with col:
            st.subheader(md(title))
            if agree is not None:
                st.metric("Same category as the query", f"{sum(agree)} of {len(agree)}")
            if clouds is not None:
                fig = cloud_thumbnails([clouds[row]] + [clouds[r] for r in nb_rows],
                                       ["query: " + short(captions[row], 20)] + [short(captions[r], 26) for r in nb_rows],
                                       colors=[QUERY] + ([AGREE if a else DISAGREE for a in agree] if agree
                                                         else [QUERY] * len(nb_rows)), cols=3)
                st.plotly_chart(safe_figure(fig), key=f"nb_thumbs_{side}", width="stretch")
            elif "image_url" in ds.items.columns:
                st.image([str(ds.items["image_url"].iloc[r]) for r in nb_rows], width=120,
                         caption=[short(captions[r], 40) for r in nb_rows])
            st.dataframe(table, hide_index=True, width="stretch")
    if clouds is None and "image_url" not in ds.items.columns:
        st.info("These items carry no geometry (no point clouds) and no images, so no thumbnails are drawn. Add the "
                "clouds as an n x P x 3 array to the dataset, or upload a distance matrix below.")
    st.caption("Green thumbnails share the query's category, red ones do not. Paper A: in the original 3D space the "
               "neighbours look alike (geometry); in the CCA subspace they mean alike (semantics).")
    export_controls("platoscope-neighbours", table=pd.concat({k_: t for k_, t in tables.items()}, names=["space"])
                    .reset_index(level=0),
                    manifest=build_manifest(view="neighbours/lists", dataset=ds, seeds=[],
                                            params={"space": space, "partner": partner, "k": k, "dim": dim,
                                                    "metric": metric, "item": item}))

with st.expander("Or pick the query item on a map (click a point)", expanded=False):
    m = None
    with guard():
        m = pca_map_or_progress(ds, space, 5000, priority=1)   # after the neighbours
    if m is not None:
        with guard():
            # plotly up to a few thousand points, the canvas component above (ui.maps.draw_map, built once per
            # map): the study's 5,000-point map was a 324 KB plotly figure that also made every visit load and run
            # plotly's bundle (about 1 s of the browser's time) for a map in a closed expander
            picked, _ = draw_map(ds, m["rows"], m["coords"], "label" if labels is not None else "(none)",
                                 title=f"PCA of '{space}'", axes=("PCA 1", "PCA 2"), key="nb_map")
            if len(picked) and st.session_state.get("nb_last_pick") != int(picked[0]):
                st.session_state["nb_last_pick"] = int(picked[0])
                st.session_state["nb_pending"] = ids[int(picked[0])]
                st.rerun()

# -- geometry versus semantics ------------------------------------------------------------------------------------
st.header("Geometry versus semantics")
geometry = None
upload = st.file_uploader("Ground truth: an n x n distance matrix (.npy or .csv) - optional when the items carry "
                          "point clouds", type=["npy", "csv"], key="nb_matrix")
if upload is not None:
    with guard():
        raw = upload.getvalue()
        arr = (np.load(io.BytesIO(raw), allow_pickle=False) if upload.name.lower().endswith(".npy")
               else np.loadtxt(io.StringIO(raw.decode("utf-8")), delimiter=",", ndmin=2))
        try:
            geometry = ("matrix", check_distance_matrix(arr, ds.n))
        except DataError as err:
            err.file = upload.name
            raise
if geometry is None and clouds is None:
    st.info("Geometry versus semantics needs a geometric ground truth, and these items carry none: no point clouds "
            "(an n x P x 3 token space) and no distance matrix. Upload an n x n matrix above.")
    st.stop()

g1, g2, g3 = st.columns(3)
n_sample = int(g1.number_input("Sampled items", 10, 5000, key=url_key("sample", 300)))
n_points = int(g2.number_input("Points per cloud", 16, 4096, key=url_key("points", 256),
                               disabled=geometry is not None))
seed = int(g3.number_input("Seed", 0, 10_000, key=url_key("seed", 0)))
sync_url(sample=n_sample, points=n_points, seed=seed)
geo = None
with guard():
    gkey = cached.result_key("geosem", ds.fingerprint, space, partner, dim, metric, n_sample, n_points, seed,
                             None if geometry is None else upload.file_id)
    geo = jobs.computed(namespace, gkey, f"Chamfer distances of {n_sample} items ({n_points} points each), computed "
                                           "once and cached",
                          lambda progress: dataset_geometry_vs_semantics(
                              ds, space, partner, geometry=geometry, n_sample=n_sample, n_points=n_points, seed=seed,
                              metric=metric, k=dim, namespace=namespace, progress=progress))
if geo is not None:
    g = geo["geometry"]
    st.caption((f"Chamfer distances of {g['n_sample']} seeded items, {g['n_points']} points each ({g['n_pairs']:,} "
                f"pairs): {g['seconds']:.1f} s on {g['device']}" + (", read from the cache" if g["cached"] else "") + "."
                if g["kind"] == "chamfer" else f"Given distance matrix, {g['n_sample']} seeded items "
                                               f"({g['n_pairs']:,} pairs).")
               + f" CCA fitted on the {geo['n_anchors']} items outside the sample. Embedding distance: {metric}.")
    names = {"original": f"original '{space}'", "cca_subspace": f"CCA subspace (k = {geo['k']})",
             "affine_mapped": f"affine-mapped into '{partner}'", "partner": f"partner '{partner}'"}
    rows_t = []
    for v, e in geo["versions"].items():
        nb = e["neighbours"]
        rows_t.append({"version": names.get(v, v), "Pearson r": e["pearson"], "Spearman rho": e["spearman"],
                       f"{nb['k']}-NN Chamfer distance": nb["geometric_distance"],
                       f"{nb['k']}-NN same category": nb["label_agreement"]})
    table = pd.DataFrame(rows_t)
    st.dataframe(table.round(3), hide_index=True, width="stretch")
    nb0 = next(iter(geo["versions"].values()))["neighbours"]
    st.caption(f"For reference: geometric distance to the {nb0['k']} geometrically nearest items "
               f"{nb0['geometric_distance_best']:.3f}, to a random item {nb0['geometric_distance_random']:.3f}"
               + (f"; same category by chance {nb0['label_chance']:.3f}." if nb0["label_chance"] is not None else "."))
    fig = distance_scatter(geo["geometric_distances"],
                           {names["original"]: geo["versions"]["original"],
                            **({names["cca_subspace"]: geo["versions"]["cca_subspace"]}
                               if "cca_subspace" in geo["versions"] else {})},
                           metric=metric, geometry_label="Chamfer distance" if g["kind"] == "chamfer"
                           else "given distance", seed=seed)
    st.plotly_chart(safe_figure(fig), key="nb_scatter", width="stretch")
    export_controls("platoscope-geosem", fig=fig, table=table,
                    manifest=build_manifest(view="neighbours/geosem", dataset=ds, seeds=[seed],
                                            params={"space": space, "partner": partner, "dim": dim, "metric": metric,
                                                    "sample": n_sample, "points": n_points, "geometry": g}))
