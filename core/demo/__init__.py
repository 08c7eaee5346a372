"""The built-in demo world: 2,016 synthetic everyday objects (14 categories, 4 super-categories) with real MiniLM text
embeddings of synthetic captions, a hand-crafted 3D descriptor and a small contrastively trained PointNet.

What is synthetic: the shapes (parametric parts, 1,024 surface points each) and the captions (templates filled from
the true parameters). What is real: the text encoder (all-MiniLM-L6-v2). See data/demo/DATA_CARD.md.

* :func:`load_demo` - the Dataset (items + vector spaces, float32 from the float16 artifact);
* :func:`demo_point_clouds` - the ``n x 1024 x 3`` clouds (items' ``cloud_index`` points into it);
* :func:`demo_token_space` - the token sets (``minilm_tokens``, ``pointnet_points``), computed on first use into
  ``cache/shared/demo/`` and memory-mapped from there; :func:`load_demo`'s Dataset carries them (and the point clouds)
  as lazy spaces.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..dataset import Dataset, LazySpace, SourceFile, Space
from ..errors import DataError
from .paths import ARTIFACT_DIR, _artifact_dir
from .shapes import N_POINTS

DEMO_LINE = ("Demo: 2,016 synthetic 3D objects (14 categories) with template captions; the shapes and captions are "
             "synthetic, the text encoder (all-MiniLM-L6-v2) is real.")
TOKEN_SPACES = ("minilm_tokens", "pointnet_points")
VECTOR_SPACES = ("minilm", "minilm_tier0", "minilm_tier1", "minilm_tier2", "minilm_tier3",
                 *(f"minilm_layer{k}" for k in range(1, 7)), "descriptor_3d", "pointnet")

__all__ = ["load_demo", "demo_point_clouds", "demo_token_space", "demo_manifest", "DEMO_LINE", "ARTIFACT_DIR"]


@functools.lru_cache(maxsize=2)
def _manifest(path: str) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())


def demo_manifest() -> dict:
    """The artifact's manifest (seeds, build timings, file sizes and sha256)."""
    return _manifest(str(_artifact_dir()))


@functools.lru_cache(maxsize=2)
def _arrays(path: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    p = Path(path)
    items = pd.read_parquet(p / "items.parquet")
    with np.load(p / "spaces.npz", allow_pickle=False) as z:
        raw = {k: z[k] for k in z.files}
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    spaces = {"minilm": f32(raw["minilm"])}
    for k in range(3):
        spaces[f"minilm_tier{k}"] = f32(raw["tier_embeddings"][raw["tier_index"][:, k]])
    spaces["minilm_tier3"] = spaces["minilm"]  # tier 3 is the caption itself
    for k in range(1, 6):
        spaces[f"minilm_layer{k}"] = f32(raw[f"minilm_layer{k}"])
    # layer 6 mean-pooled = its norm times the final (normalised) embedding: stored as the norms only
    spaces["minilm_layer6"] = spaces["minilm"] * raw["minilm_layer6_norm"][:, None].astype(np.float32)
    spaces["descriptor_3d"] = f32(raw["descriptor_3d"])
    spaces["pointnet"] = f32(raw["pointnet"])
    for arr in spaces.values():
        arr.setflags(write=False)
    return items, spaces


_SPACE_INFO = {
    "minilm": {"encoder": "all-MiniLM-L6-v2", "text": "tier 3 caption (most specific)", "normalised": True},
    "descriptor_3d": {"encoder": "D2 + extents + covariance + radial/height histograms", "standardised": True},
    "pointnet": {"encoder": "PointNet (contrastive, trained at build time)", "pooling": "max over 1024 points"},
}


def load_demo() -> Dataset:
    """The demo Dataset (origin 'demo', name 'demo'): items plus the vector spaces.

    Spaces: ``minilm`` (most specific caption), ``minilm_tier0..3`` (tier texts; tier 3 = the caption),
    ``minilm_layer1..6`` (mean-pooled hidden states), ``descriptor_3d``, ``pointnet`` (pooled). Values are float32
    widened from the float16 artifact. Computed on first use (:class:`core.dataset.LazySpace`, not in
    ``space_names``): the token sets ``minilm_tokens`` and ``pointnet_points`` (256 points; see
    :func:`demo_token_space`) and ``point_clouds`` (``n x 1024 x 3``, the items' clouds). Item columns: id, label, super, tier_0..tier_3, caption, chain,
    neg_tier_0..3, width_m, depth_m, height_m, scale_m, attributes (JSON), params (JSON), cloud_index.
    """
    path = _artifact_dir()
    items, arrays = _arrays(str(path))
    manifest = _manifest(str(path))
    spaces = []
    for name in VECTOR_SPACES:
        modality = "3d" if name in ("descriptor_3d", "pointnet") else "text"
        info = dict(_SPACE_INFO.get(name, {"encoder": "all-MiniLM-L6-v2"}))
        info["stored_as"] = "float16"
        if name in ("minilm", "pointnet"):
            info["primary"] = True      # the learned / sentence-level space of its modality (chosen first)
        spaces.append(Space(name, arrays[name], modality=modality, source="demo", info=info))
    # on demand: the token sets (an encoder run the first time) and the objects' point clouds
    spaces += [_token_space(name, len(items)) for name in TOKEN_SPACES]
    spaces.append(_point_clouds_space(items["cloud_index"].to_numpy()))
    sources = [SourceFile(f"demo/{f}", meta["sha256"], meta["bytes"]) for f, meta in manifest["files"].items()]
    return Dataset(items.copy(), spaces, name="demo", origin="demo", sources=sources)


@functools.lru_cache(maxsize=2)
def _clouds(path: str) -> np.ndarray:
    with np.load(Path(path) / "clouds.npz", allow_pickle=False) as z:
        clouds = z["clouds"].astype(np.float32)
    clouds.setflags(write=False)
    return clouds


def demo_point_clouds() -> np.ndarray:
    """All demo point clouds, ``n x 1024 x 3`` float32 (stored float16; z up; centroid at the origin; farthest
    point at distance 1). Row ``k`` belongs to the item whose ``cloud_index`` is ``k``."""
    return _clouds(str(_artifact_dir()))


def _token_dir() -> Path:
    from ..cache import namespace_dir
    key = demo_manifest()["files"]["spaces.npz"]["sha256"][:16]
    path = namespace_dir("shared") / "demo" / key
    path.mkdir(parents=True, exist_ok=True)
    return path


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npy")
    np.save(tmp, arr, allow_pickle=False)
    os.replace(tmp, path)


def _check_token_space(name: str, n_points: int) -> int:
    if name not in TOKEN_SPACES:
        raise DataError(f"no demo token space named '{name}'", hint=f"available: {', '.join(TOKEN_SPACES)}")
    n_points = int(n_points)
    if name == "pointnet_points" and not 1 <= n_points <= 1024:
        raise DataError(f"n_points must be in 1..1024, got {n_points}")
    return n_points


def demo_token_space_files(name: str, n_points: int = 256) -> list[Path]:
    """The files :func:`demo_token_space` keeps ``name`` in (all present once it has been computed)."""
    n_points = _check_token_space(name, n_points)
    folder = _token_dir()
    if name == "minilm_tokens":
        return [folder / "minilm_tokens.npy", folder / "minilm_tokens_mask.npy"]
    return [folder / f"pointnet_points_{n_points}.npy"]


def demo_token_space_is_computed(name: str, n_points: int = 256) -> bool:
    """Whether :func:`demo_token_space` would only read files (no encoder run)."""
    return all(p.exists() for p in demo_token_space_files(name, n_points))


def _minilm_tokens(progress=None):
    data_path, mask_path = demo_token_space_files("minilm_tokens")
    if not (data_path.exists() and mask_path.exists()):
        from ..encoders import MiniLMEncoder
        items, _ = _arrays(str(_artifact_dir()))
        tokens, mask = MiniLMEncoder(cache_namespace=None).encode_tokens(items["caption"].tolist(), progress)
        _save_atomic(mask_path, mask)
        _save_atomic(data_path, tokens.astype(np.float16))
    return np.load(data_path, mmap_mode="r"), np.load(mask_path), None


def _pointnet_points(n_points: int, progress=None):
    (data_path,) = demo_token_space_files("pointnet_points", n_points)
    if not data_path.exists():
        from ..device import pick_device
        from .pointnet import load_pointnet, pointnet_features
        model = load_pointnet(_artifact_dir() / "pointnet.safetensors")
        clouds = demo_point_clouds()[:, :n_points]
        feats = pointnet_features(model, clouds, per_point=True, device=pick_device(), progress=progress)
        _save_atomic(data_path, feats.astype(np.float16))
    return np.load(data_path, mmap_mode="r")


def _token_space(name: str, n: int, n_points: int = 256) -> LazySpace:
    """The lazy Space of a demo token set (computed on first use, see :func:`demo_token_space`)."""
    n_points = _check_token_space(name, n_points)
    _, arrays = _arrays(str(_artifact_dir()))     # the pooled spaces have the token sets' widths
    if name == "minilm_tokens":
        return LazySpace(name, _minilm_tokens, (n, None, arrays["minilm"].shape[1]), modality="text", source="demo",
                         info={"encoder": "all-MiniLM-L6-v2", "layer": 6, "tokens": "word pieces"},
                         files=lambda: demo_token_space_files("minilm_tokens"))
    return LazySpace(name, functools.partial(_pointnet_points, n_points), (n, n_points, arrays["pointnet"].shape[1]),
                     modality="3d",
                     source="demo", info={"encoder": "PointNet per-point features", "points": n_points,
                                          "coordinates": "point_clouds"},
                     files=lambda: demo_token_space_files("pointnet_points", n_points))


def _point_clouds_space(cloud_index: np.ndarray) -> LazySpace:
    index = np.asarray(cloud_index, dtype=np.int64)
    return LazySpace("point_clouds", lambda progress=None: demo_point_clouds()[index], (len(index), N_POINTS, 3),
                     modality="3d", source="demo",
                     info={"encoder": "none (the objects' surface points, x y z in units of the farthest point)"})


def demo_token_space(name: str, n_points: int = 256, progress=None) -> Space:
    """A demo token-set space, computed now (if it was not) into ``cache/shared/demo/<artifact hash>/`` and
    memory-mapped from there. :func:`load_demo` carries the same spaces lazily (computed on first use).

    * ``minilm_tokens`` - MiniLM last-layer word-piece outputs of each caption, ``n x T x 384`` float16 with a mask
      (T = the longest caption in word pieces, [CLS]/[SEP] included).
    * ``pointnet_points`` - the PointNet's per-point 128-d features (whose max over all 1,024 points is the
      ``pointnet`` space) for the first ``n_points`` points of each cloud (the points are stored in random order, so
      these are a uniform sample), ``n x n_points x 128`` float16 (n_points=256: 132 MB; 1024: 528 MB).

    ``progress(done, total)`` is called while computing.
    """
    items, _ = _arrays(str(_artifact_dir()))
    return _token_space(name, len(items), n_points).materialize(progress)
