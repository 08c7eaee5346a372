"""python: encoders (the user's own torch module) and point-cloud reading; the demo's PointNet as the worked example."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch

from core.encoders import make_encoder
from core.encoders_python import EXAMPLE_SPEC, PythonEncoder
from core.errors import BudgetError, DataError
from core.pointclouds import PointClouds, parse_ply, read_point_clouds

USER_MODULE = '''
import torch
from torch import nn

class Mean(nn.Module):
    """A tiny point encoder: per-point linear map, tokens b x P x 4."""
    n_layers = 2
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 4)
    def forward(self, x):
        return self.b(torch.relu(self.a(x)))
    def forward_layers(self, x):
        h = torch.relu(self.a(x))
        return [h, self.b(h)]

class Chars(nn.Module):
    def forward(self, texts):
        return torch.tensor([[len(t), t.count("a"), 1.0] for t in texts], dtype=torch.float32)

def points():
    return {"module": Mean(), "input": "pointcloud", "output": "tokens", "pool": "mean", "layers": 2,
            "name": "tiny points"}

def text():
    return Chars(), "text", "vector"

def broken():
    return {"module": Mean(), "input": "audio", "output": "vector"}

def not_a_module():
    return ("x", "text", "vector")
'''


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "my_encoder.py"
    path.write_text(USER_MODULE)
    return path


@pytest.fixture(scope="module")
def demo_clouds():
    return read_point_clouds("data/demo/clouds.npz")


def test_pointnet_example_equals_the_demo_pointnet(demo_clouds):
    from core.demo import _artifact_dir
    from core.demo.pointnet import load_pointnet, pointnet_features
    enc = make_encoder(EXAMPLE_SPEC, cache_namespace=None, batch_size=16)
    assert isinstance(enc, PythonEncoder) and enc.input_kinds == ("pointcloud",) and enc.n_layers == 3
    sub = PointClouds(demo_clouds.names[:40], demo_clouds.clouds[:40], "clouds.npz")
    out = enc.encode_inputs("pointcloud", sub, layers="all", tokens=True)
    net = load_pointnet(_artifact_dir() / "pointnet.safetensors")
    clouds = np.stack(sub.clouds)
    np.testing.assert_allclose(out["embedding"], pointnet_features(net, clouds), atol=1e-5)
    np.testing.assert_allclose(out["tokens"], pointnet_features(net, clouds, per_point=True), atol=1e-5)
    np.testing.assert_allclose(out["layers"][3], out["embedding"], atol=1e-6)  # last layer, max-pooled
    assert out["layers"][1].shape == (40, 64) and out["mask"].shape == (40, 1024) and out["mask"].all()
    assert out["names"] == demo_clouds.names[:40]
    assert enc.space_info("pointcloud")["pooling"] == "max"


def test_user_module_varying_cloud_sizes_keep_input_order(user_file):
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(p, 3)).astype(np.float32) for p in (5, 3, 5, 4, 3)]
    pcs = PointClouds([f"c{i}" for i in range(5)], clouds, "mem")
    enc = make_encoder(f"python:{user_file}:points", cache_namespace=None, batch_size=2)
    assert enc.name == "tiny_points"
    out = enc.encode_inputs("pointcloud", pcs, layers=(1, 2), tokens=True)
    module = enc.load()["module"]
    for i, c in enumerate(clouds):
        with torch.no_grad():
            tok = module(torch.from_numpy(c)[None])[0].numpy()
            h1 = module.forward_layers(torch.from_numpy(c)[None])[0][0].numpy()
        np.testing.assert_allclose(out["embedding"][i], tok.mean(0), atol=1e-6)
        np.testing.assert_allclose(out["layers"][1][i], h1.mean(0), atol=1e-6)
        np.testing.assert_allclose(out["tokens"][i, :len(c)], tok, atol=1e-6)
        assert out["mask"][i].sum() == len(c)
    assert out["tokens"].shape == (5, 5, 4) and out["names"] == pcs.names


def test_user_text_module_and_protocol_errors(user_file):
    enc = make_encoder(f"python:{user_file}:text", cache_namespace=None)
    out = enc.encode_inputs("text", ["banana", "a"])
    np.testing.assert_array_equal(out["embedding"], [[6, 3, 1], [1, 1, 1]])
    np.testing.assert_array_equal(enc.embed_empty_string(), [0, 0, 1])
    with pytest.raises(DataError, match="no token features"):
        enc.encode_inputs("text", ["x"], tokens=True)
    with pytest.raises(DataError, match="exposes no layers"):
        enc.encode_inputs("text", ["x"], layers=True)
    with pytest.raises(DataError, match="cannot encode point clouds"):
        enc.encode_inputs("pointcloud", PointClouds(["a"], [np.zeros((2, 3), np.float32)], "m"))
    with pytest.raises(DataError, match="input kind 'audio'"):
        make_encoder(f"python:{user_file}:broken").load()
    with pytest.raises(DataError, match="must be a torch.nn.Module"):
        make_encoder(f"python:{user_file}:not_a_module").load()
    with pytest.raises(DataError, match="has no function 'nope'") as e:
        make_encoder(f"python:{user_file}:nope").load()
    assert "points" in e.value.hint
    with pytest.raises(DataError, match="cannot import the module 'no_such_pkg_xyz'"):
        make_encoder("python:no_such_pkg_xyz:make").load()


# ---------------------------------------------------------------------------------------------- point clouds
def _ply_ascii(points):
    head = f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\n" \
           f"property float z\nproperty uchar red\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n"
    return (head + "".join(f"{x} {y} {z} 7\n" for x, y, z in points)).encode()


def _ply_binary(points, order="<"):
    fmt = "binary_little_endian" if order == "<" else "binary_big_endian"
    head = f"ply\nformat {fmt} 1.0\ncomment made by a test\nelement vertex {len(points)}\nproperty double x\n" \
           f"property float y\nproperty float z\nend_header\n".encode()
    rec = np.zeros(len(points), dtype=[("x", order + "f8"), ("y", order + "f4"), ("z", order + "f4")])
    rec["x"], rec["y"], rec["z"] = points[:, 0], points[:, 1], points[:, 2]
    return head + rec.tobytes()


def test_read_point_clouds_every_layout(tmp_path):
    rng = np.random.default_rng(1)
    pts = [rng.normal(size=(p, 3)).astype(np.float32) for p in (4, 6, 5, 3)]
    folder = tmp_path / "clouds"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.ply").write_bytes(_ply_ascii(pts[0]))
    (folder / "b.ply").write_bytes(_ply_binary(pts[1]))
    (folder / "sub" / "c.xyz").write_text("\n".join(" ".join(map(str, p)) for p in pts[2]) + "\n")
    np.save(folder / "d.npy", pts[3])
    (folder / "readme.md").write_text("hello")
    pc = read_point_clouds(folder)
    assert pc.names == ["a.ply", "b.ply", "d.npy", "sub/c.xyz"]
    for got, want in zip(pc.clouds, [pts[0], pts[1], pts[3], pts[2]]):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert pc.skipped == [("readme.md", "not a point-cloud file extension")]
    np.testing.assert_allclose(parse_ply(_ply_binary(pts[1], ">"), "big.ply"), pts[1], atol=1e-6)
    zpath = tmp_path / "clouds.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    assert read_point_clouds(zpath).names == pc.names
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../etc/x.xyz", "1 2 3\n")
        zf.writestr("ok.xyz", "1 2 3\n4 5 6\n")
    got = read_point_clouds(evil)
    assert got.names == ["ok.xyz"] and "path traversal" in dict(got.skipped)["../../etc/x.xyz"]
    uploads = [(p.name, p.read_bytes()) for p in sorted(folder.glob("*.ply"))]
    assert read_point_clouds(uploads).names == ["a.ply", "b.ply"]
    # arrays: n x P x 3 with ids, one cloud per member, .npy
    arr = rng.normal(size=(3, 8, 3)).astype(np.float16)
    np.savez(tmp_path / "stack.npz", clouds=arr, id=np.array(["x", "y", "z"]))
    stack = read_point_clouds(tmp_path / "stack.npz")
    assert stack.names == ["x", "y", "z"] and stack.clouds[1].dtype == np.float32
    np.testing.assert_array_equal(stack.clouds[2], arr[2].astype(np.float32))
    np.savez(tmp_path / "many.npz", chair=pts[0], table=pts[1])
    assert read_point_clouds(tmp_path / "many.npz").names == ["chair", "table"]
    np.save(tmp_path / "stack.npy", arr)
    assert len(read_point_clouds(tmp_path / "stack.npy")) == 3


def test_read_point_clouds_refuses_bad_input_without_inflating(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled"):
        read_point_clouds(tmp_path / "obj.npy")
    bad = np.zeros((2, 4, 3), np.float32)
    bad[1, 2, 0] = np.nan
    np.savez(tmp_path / "nan.npz", clouds=bad)
    with pytest.raises(DataError, match="NaN") as e:
        read_point_clouds(tmp_path / "nan.npz")
    assert e.value.array == "clouds[1]" and e.value.row == 2
    np.savez(tmp_path / "flat.npz", clouds=np.zeros((4, 2), np.float32))
    with pytest.raises(DataError, match="P x 3"):
        read_point_clouds(tmp_path / "flat.npz")
    # a zip bomb's declared size is refused from the header: nothing is inflated
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.npy", b"\0" * (8 << 20))
    (tmp_path / "bomb.zip").write_bytes(buf.getvalue())
    assert (tmp_path / "bomb.zip").stat().st_size < 100_000
    with pytest.raises(BudgetError, match="over the 1 MB limit"):
        read_point_clouds(tmp_path / "bomb.zip", max_bytes=1 << 20)
    np.savez_compressed(tmp_path / "big.npz", clouds=np.zeros((64, 1024, 3), np.float32))
    with pytest.raises(BudgetError, match="limit"):
        read_point_clouds(tmp_path / "big.npz", max_bytes=1 << 20)
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n")
    with pytest.raises(DataError, match="no readable point clouds.*x, y, z"):
        read_point_clouds(tmp_path / "bad.ply")
    with pytest.raises(DataError, match="does not exist"):
        read_point_clouds(tmp_path / "missing.npz")
