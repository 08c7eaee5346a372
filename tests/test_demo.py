"""The demo world: primitives, objects, captions, descriptor, the committed artifact and its regeneration tolerance.

Regeneration tolerance (also in data/demo/DATA_CARD.md), checked here on the first 50 objects:
clouds, captions, negatives and items regenerate exactly (the clouds bit-for-bit after float16 rounding);
the standardised descriptor within 2e-2 absolute (float16 storage of values of order 1, plus summation order);
MiniLM embeddings of the captions within 2e-3 absolute per coordinate and cosine > 0.9999 (float16 storage, BLAS);
the PointNet pooled features recomputed from the committed weights within 2e-2 relative to the feature scale.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from core.demo import (ARTIFACT_DIR, demo_manifest, demo_point_clouds, demo_token_space, load_demo)
from core.demo.build import SEED, generate_objects
from core.demo.captions import caption_chain, negative_chain
from core.demo.descriptors import shape_descriptors, standardise
from core.demo.primitives import box, cylinder, normalise_cloud, revolve, sample_surface, torus
from core.demo.shapes import CATEGORIES, DOMAINS, SUPER, make_object
from core.errors import DataError

N_CHECK = 50


# ---------------------------------------------------------------------------------------------- primitives
def test_cylinder_sampling_is_area_weighted():
    rng = np.random.default_rng(0)
    r, h = 0.5, 2.0
    pts = cylinder(r, 0.0, h).sample(20000, rng)
    on_caps = np.isclose(pts[:, 2], 0) | np.isclose(pts[:, 2], h)
    expected = 2 * np.pi * r ** 2 / (2 * np.pi * r ** 2 + 2 * np.pi * r * h)  # hand-worked: 0.2
    assert abs(on_caps.mean() - expected) < 0.01
    side = pts[~on_caps]
    np.testing.assert_allclose(np.hypot(side[:, 0], side[:, 1]), r, atol=1e-12)
    assert stats.kstest(side[:, 2] / h, "uniform").pvalue > 1e-3
    assert cylinder(r, 0.0, h).area == pytest.approx(2 * np.pi * r ** 2 + 2 * np.pi * r * h)


def test_cone_sampling_density_grows_with_radius():
    # lateral surface of a cone with apex at z=1 and base radius 1 at z=0: density of z is 2(1 - z)
    pts = revolve([1.0, 0.0], [0.0, 1.0]).sample(20000, np.random.default_rng(1))
    assert stats.kstest(pts[:, 2], lambda z: 1 - (1 - z) ** 2).pvalue > 1e-3
    np.testing.assert_allclose(np.hypot(pts[:, 0], pts[:, 1]), 1 - pts[:, 2], atol=1e-9)


def test_box_and_torus_points_lie_on_their_surfaces():
    rng = np.random.default_rng(2)
    size = np.array([1.0, 2.0, 3.0])
    pts = box((0, 0, 0), size).sample(5000, rng)
    on_face = np.isclose(np.abs(pts), size / 2).any(axis=1)
    assert on_face.all() and (np.abs(pts) <= size / 2 + 1e-12).all()
    faces = np.argmax(np.isclose(np.abs(pts), size / 2), axis=1)
    areas = np.array([size[1] * size[2], size[0] * size[2], size[0] * size[1]])
    np.testing.assert_allclose(np.bincount(faces, minlength=3) / 5000, areas / areas.sum(), atol=0.02)
    R, r = 1.0, 0.25
    t = torus(R, r, (0, 0, 0))
    assert t.area == pytest.approx(4 * np.pi ** 2 * R * r)
    pts = t.sample(5000, rng)
    np.testing.assert_allclose((np.hypot(pts[:, 0], pts[:, 1]) - R) ** 2 + pts[:, 2] ** 2, r ** 2, atol=1e-9)
    # area weighting: more points on the outer half (x^2+y^2 > R^2) in ratio (pi R + 2r) / (pi R - 2r)
    outer = (np.hypot(pts[:, 0], pts[:, 1]) > R).mean()
    assert abs(outer - (np.pi * R + 2 * r) / (2 * np.pi * R)) < 0.02


def test_sample_surface_and_normalise():
    rng = np.random.default_rng(3)
    pts = sample_surface([box((0, 0, 0), (1, 1, 1)), cylinder(0.1, 1, 3)], 1024, rng)
    assert pts.shape == (1024, 3)
    cloud, centroid, scale = normalise_cloud(pts)
    np.testing.assert_allclose(cloud.mean(0), 0, atol=1e-12)
    assert np.linalg.norm(cloud, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(cloud * scale + centroid, pts)


# ---------------------------------------------------------------------------------------------- objects
def test_objects_are_deterministic_and_cover_categories():
    a, b = make_object(17, 5), make_object(17, 5)
    np.testing.assert_array_equal(a["cloud"], b["cloud"])
    assert a["params"] == b["params"]
    assert not np.array_equal(a["cloud"], make_object(17, 6)["cloud"])
    labels = [make_object(i, 5)["label"] for i in range(len(CATEGORIES))]
    assert sorted(labels) == sorted(CATEGORIES) and len(CATEGORIES) >= 10
    for i in range(len(CATEGORIES)):
        c = make_object(i, 5)["cloud"]
        assert c.shape == (1024, 3) and np.isfinite(c).all()


def test_caption_chains_entail_and_negatives_contradict():
    rng = np.random.default_rng(0)
    for i in range(3 * len(CATEGORIES)):
        obj = make_object(i, 11)
        label, attrs = obj["label"], obj["attrs"]
        t0, t1, t2, t3 = caption_chain(label, attrs)
        assert t0 == SUPER[label] and t1 == label
        assert label in t2 and attrs["size"] in t2 and attrs["support"][1] in t2
        # tier 3 repeats tier 2's information and adds the tier-3 attributes
        for word in (attrs["size"], label, attrs["support"][1], attrs["adj"], attrs["mat"], attrs["detail"]):
            assert word in t3
        n0, n1, n2, n3 = negative_chain(label, attrs, rng)
        assert n0 != t0
        assert n1 != label and SUPER[n1] == t0          # contradicts tier 1, entails tier 0
        assert n2 != t2 and n2.split(" with ")[0].endswith(label)  # contradicts tier 2, still this category
        assert n3 != t3 and f"a {attrs['size']} " in n3 and f" {label} with {attrs['support'][0]} " in n3
        assert attrs["mat"] in DOMAINS[label]["mat"] and attrs["detail"] in DOMAINS[label]["detail"]


def test_descriptor_matches_hand_computation():
    cloud = make_object(3, 1)["cloud"]
    d = shape_descriptors(cloud[None], seed=9, start=4)[0]
    rng = np.random.default_rng([9, 4])
    i, j = rng.integers(0, 1024, 4096), rng.integers(0, 1024, 4096)
    dist = np.sqrt(((cloud[i] - cloud[j]) ** 2).sum(1))
    np.testing.assert_allclose(d[:32], np.histogram(dist, 32, (0, 2))[0] / 4096)
    np.testing.assert_allclose(d[32:35], np.ptp(cloud, axis=0))
    np.testing.assert_allclose(d[35:38], np.sort(np.linalg.eigvalsh(np.cov(cloud, rowvar=False)))[::-1])
    radial = np.linalg.norm(cloud - cloud.mean(0), axis=1)
    np.testing.assert_allclose(d[38:54], np.histogram(radial, 16, (0, 1))[0] / 1024)
    np.testing.assert_allclose(d[54:70], np.histogram(cloud[:, 2], 16, (-1, 1))[0] / 1024)
    assert d.shape == (70,)
    z, mean, std = standardise(np.stack([d, 2 * d, 3 * d]))
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- artifact
@pytest.fixture(scope="module")
def demo():
    return load_demo()


def test_artifact_size_and_manifest():
    manifest = demo_manifest()
    total = sum((ARTIFACT_DIR / f).stat().st_size for f in manifest["files"])
    assert total < 25 * 2 ** 20
    assert (ARTIFACT_DIR / "DATA_CARD.md").exists()
    assert manifest["seed"] == SEED and manifest["n_objects"] >= 2000


def test_load_demo_shape_and_spaces(demo):
    assert demo.origin == "demo" and demo.name == "demo" and demo.n >= 2000
    assert demo.items["label"].nunique() >= 10
    expected = {"minilm", "descriptor_3d", "pointnet", *(f"minilm_tier{k}" for k in range(4)),
                *(f"minilm_layer{k}" for k in range(1, 7))}
    assert expected <= set(demo.space_names)
    for col in ("id", "label", "super", "caption", "chain", "cloud_index", "params",
                *(f"tier_{k}" for k in range(4)), *(f"neg_tier_{k}" for k in range(4))):
        assert col in demo.items.columns
    assert (demo.items["caption"] == demo.items["tier_3"]).all()
    m = demo["minilm"].data
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1, atol=2e-3)
    l6 = demo["minilm_layer6"].data
    np.testing.assert_allclose(l6 / np.linalg.norm(l6, axis=1, keepdims=True), m, atol=2e-5)
    assert demo["pointnet"].modality == "3d" and demo["minilm_tier1"].modality == "text"
    # every item sharing a tier-1 text shares its tier-1 embedding
    t1 = demo["minilm_tier1"].data
    first = demo.items.groupby("tier_1").head(1).index
    for k in first:
        same = (demo.items["tier_1"] == demo.items["tier_1"][k]).to_numpy()
        assert (t1[same] == t1[k]).all()
    clouds = demo_point_clouds()
    assert clouds.shape == (demo.n, 1024, 3)
    assert (demo.items["cloud_index"].to_numpy() == np.arange(demo.n)).all()


@pytest.fixture(scope="module")
def regenerated():
    return generate_objects(N_CHECK)


def test_regeneration_objects_and_captions_exact(demo, regenerated):
    items, clouds = regenerated
    np.testing.assert_array_equal(clouds.astype(np.float32), demo_point_clouds()[:N_CHECK])
    cols = [c for c in items.columns]
    assert items.equals(demo.items.loc[:N_CHECK - 1, cols])


def test_regeneration_descriptor_within_tolerance(demo, regenerated):
    _, clouds = regenerated
    with np.load(ARTIFACT_DIR / "spaces.npz", allow_pickle=False) as z:
        mean, std = z["descriptor_mean"], z["descriptor_std"]
    raw = shape_descriptors(clouds.astype(np.float32), SEED)
    desc, _, _ = standardise(raw, mean, std)
    np.testing.assert_allclose(demo["descriptor_3d"].data[:N_CHECK], desc, atol=2e-2, rtol=1e-3)


def test_regeneration_minilm_within_tolerance(demo, regenerated):
    from core.encoders import MiniLMEncoder
    items, _ = regenerated
    out = MiniLMEncoder(cache_namespace=None).encode_all(items["caption"].tolist(), layers=(2,))
    np.testing.assert_allclose(demo["minilm"].data[:N_CHECK], out["embedding"], atol=2e-3)
    cos = (demo["minilm"].data[:N_CHECK] * out["embedding"]).sum(1)
    assert cos.min() > 0.9999
    np.testing.assert_allclose(demo["minilm_layer2"].data[:N_CHECK], out["layers"][2], atol=2e-3, rtol=2e-3)


def test_regeneration_pointnet_from_committed_weights(demo):
    from core.demo.pointnet import load_pointnet, pointnet_features
    model = load_pointnet(ARTIFACT_DIR / "pointnet.safetensors")
    feats = pointnet_features(model, demo_point_clouds()[:N_CHECK])
    committed = demo["pointnet"].data[:N_CHECK]
    scale = np.abs(committed).max()
    np.testing.assert_allclose(committed, feats, atol=2e-2 * scale)


def test_pointnet_token_space_pools_to_pointnet(demo):
    space = demo_token_space("pointnet_points", n_points=256)
    assert space.kind == "tokens" and space.data.shape == (demo.n, 256, 128)
    # the pooled space is the max over all 1,024 points: at least the max over these 256
    sub_max = np.asarray(space.data[:N_CHECK], np.float32).max(1)
    assert (sub_max <= demo["pointnet"].data[:N_CHECK] + 2e-2 * np.abs(demo["pointnet"].data).max()).all()
    again = demo_token_space("pointnet_points", n_points=256)  # second call reads the cache
    np.testing.assert_array_equal(np.asarray(again.data[:5]), np.asarray(space.data[:5]))
    with pytest.raises(DataError):
        demo_token_space("nope")


@pytest.mark.slow
def test_minilm_token_space(demo):
    space = demo_token_space("minilm_tokens")
    assert space.kind == "tokens" and space.n == demo.n and space.dim == 384
    pooled = space.vectors()
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, demo["minilm"].data, atol=3e-3)


def test_demo_token_space_is_computed_once_its_files_exist(tmp_path, monkeypatch):
    # a fresh cache: nothing computed; after one computation the files exist, are what the space reads, and
    # the check says so (the Point sets view uses it to decide whether a background job is needed)
    from core.demo import demo_token_space, demo_token_space_files, demo_token_space_is_computed

    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path))
    assert not demo_token_space_is_computed("pointnet_points", n_points=2)
    files = demo_token_space_files("pointnet_points", n_points=2)
    assert all(str(f).startswith(str(tmp_path)) for f in files)
    space = demo_token_space("pointnet_points", n_points=2)
    assert demo_token_space_is_computed("pointnet_points", n_points=2)
    assert np.array_equal(np.load(files[0]), np.asarray(space.data))
    assert not demo_token_space_is_computed("pointnet_points", n_points=3)
    with pytest.raises(DataError):
        demo_token_space_is_computed("no_such_space")


def test_demo_token_sets_and_clouds_are_lazy_spaces_of_the_dataset(tmp_path, monkeypatch):
    # the Dataset carries them without computing anything; the point clouds are the items' clouds; a token set
    # computed through the Dataset is the one demo_token_space returns (same files)
    from core import LazySpace
    from core.geometry import item_point_clouds

    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path))
    demo = load_demo()
    assert demo.on_demand_space_names() == ["minilm_tokens", "pointnet_points", "point_clouds"]
    assert not set(demo.on_demand_space_names()) & set(demo.space_names)
    tokens = demo["minilm_tokens"]
    assert isinstance(tokens, LazySpace) and not tokens.ready and tokens.dim == demo["minilm"].dim
    points = demo["pointnet_points"]
    assert points.kind == "tokens" and points.n_tokens == 256 and points.dim == demo["pointnet"].dim
    assert points.info["coordinates"] == "point_clouds" and demo["point_clouds"].modality == "3d"
    assert not any(f.exists() for f in points.files() + tokens.files())
    clouds = item_point_clouds(demo)
    assert clouds.shape == (demo.n, 1024, 3)
    np.testing.assert_array_equal(clouds, demo_point_clouds()[demo.items["cloud_index"].to_numpy()])
    assert not points.ready and not tokens.ready           # reading the clouds computed no token set
    small = demo.subset(np.arange(3))
    np.testing.assert_array_equal(small["point_clouds"].data, clouds[:3])
    assert demo["pointnet"].info.get("primary") and demo["minilm"].info.get("primary")
    assert not demo["descriptor_3d"].info.get("primary")


def test_demo_lazy_point_set_is_demo_token_space(tmp_path, monkeypatch):
    from core.demo import _token_space

    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path))
    lazy = _token_space("pointnet_points", load_demo().n, n_points=2)
    assert not lazy.ready
    direct = demo_token_space("pointnet_points", n_points=2)
    assert lazy.ready and not lazy.materialized           # the files are there: only reading is left
    np.testing.assert_array_equal(np.asarray(lazy.data), np.asarray(direct.data))
