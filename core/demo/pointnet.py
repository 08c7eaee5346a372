"""A small PointNet trained with shape-level contrastive learning on augmentations (a unimodal 3D encoder).

Architecture (Qi et al. 2017, without the T-nets): a shared per-point MLP 3 -> 64 -> 64 -> 128 (1x1 convolutions,
BatchNorm, ReLU; the last layer has no ReLU), a max-pool over points giving the 128-d shape feature, and a projection
head 128 -> 128 -> 64 used only for training (SimCLR habit: the representation is taken before the head).

Training (SimCLR, NT-Xent loss, temperature 0.1): two augmented views of every shape in a batch; augmentation =
random rotation about z, anisotropic scaling in [0.8, 1.25], Gaussian jitter (sigma 0.01), a random subset of 256
points. Seeded with local generators (torch's global RNG is never seeded), Adam.

The per-point features (the 128-d outputs before the max-pool; their max over points is the pooled feature) form the
``pointnet_points`` token set.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..base import init_linear_, torch_generator

FEATURE_DIM = 128


class PointNet(nn.Module):
    """Per-point MLP + max-pool; ``forward`` gives the pooled feature, :meth:`point_features` the per-point ones."""

    def __init__(self, feature_dim: int = FEATURE_DIM, proj_dim: int = 64):
        super().__init__()
        self.feature_dim = feature_dim
        self.mlp = nn.Sequential(
            nn.Conv1d(3, 64, 1), nn.BatchNorm1d(64), nn.ReLU(),
            nn.Conv1d(64, 64, 1), nn.BatchNorm1d(64), nn.ReLU(),
            nn.Conv1d(64, feature_dim, 1), nn.BatchNorm1d(feature_dim))
        self.head = nn.Sequential(nn.Linear(feature_dim, 128), nn.ReLU(), nn.Linear(128, proj_dim))

    def point_features(self, points: torch.Tensor) -> torch.Tensor:
        """``b x m x 3`` points -> ``b x m x feature_dim`` per-point features."""
        return self.mlp(points.transpose(1, 2)).transpose(1, 2)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """``b x m x 3`` -> ``b x feature_dim`` (max over points)."""
        return self.point_features(points).max(dim=1).values


def augment(points: torch.Tensor, gen: torch.Generator, n_keep: int = 256) -> torch.Tensor:
    """Random z-rotation, anisotropic scaling, jitter and point subset of a batch ``b x m x 3``."""
    b, m, _ = points.shape
    theta = torch.rand(b, generator=gen) * 2 * math.pi
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(b, 3, 3)
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1
    scale = torch.exp(torch.empty(b, 1, 3).uniform_(math.log(0.8), math.log(1.25), generator=gen))
    idx = torch.argsort(torch.rand(b, m, generator=gen), dim=1)[:, :n_keep]
    sub = torch.gather(points, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
    return (sub @ rot.transpose(1, 2)) * scale + 0.01 * torch.randn(sub.shape, generator=gen)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy over 2b views."""
    z = nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim.fill_diagonal_(-float("inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return nn.functional.cross_entropy(sim, target)


def train_pointnet(clouds: np.ndarray, seed: int, epochs: int = 12, batch_size: int = 128, lr: float = 1e-3,
                   log: Callable[[str], None] | None = print) -> tuple[PointNet, list[float]]:
    """Train a :class:`PointNet` on ``clouds`` (``n x m x 3``) with NT-Xent. Returns (model in eval mode, losses)."""
    gen = torch_generator(seed)
    data = torch.as_tensor(np.asarray(clouds, np.float32))
    model = PointNet()
    init_gen = torch_generator(seed)   # the initialisation's own local stream (torch's global RNG is left alone)
    for layer in model.modules():
        if isinstance(layer, (nn.Conv1d, nn.Linear)):
            init_linear_(layer, init_gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    losses = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(data), generator=gen)
        total, count = 0.0, 0
        for start in range(0, len(data) - batch_size + 1, batch_size):
            batch = data[perm[start:start + batch_size]]
            z1 = model.head(model(augment(batch, gen)))
            z2 = model.head(model(augment(batch, gen)))
            loss = nt_xent(z1, z2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        sched.step()
        losses.append(total / max(count, 1))
        if log:
            log(f"  pointnet epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")
    model.eval()
    return model, losses


@torch.inference_mode()
def pointnet_features(model: PointNet, clouds: np.ndarray, batch_size: int = 64, per_point: bool = False,
                      device: torch.device | str = "cpu", progress=None) -> np.ndarray:
    """Pooled (``n x 128``) or per-point (``n x m x 128``) features of ``clouds`` (``n x m x 3``), float32."""
    model = model.to(device).eval()
    n = len(clouds)
    out = []
    for start in range(0, n, batch_size):
        x = torch.as_tensor(np.array(clouds[start:start + batch_size], np.float32), device=device)
        f = model.point_features(x) if per_point else model(x)
        out.append(f.float().cpu().numpy())
        if progress is not None:
            progress(min(start + batch_size, n), n)
    return np.concatenate(out)


def save_pointnet(model: PointNet, path: Path, meta: dict) -> None:
    """Weights as safetensors (``path``) plus a JSON config beside it (``path`` with .json)."""
    from safetensors.torch import save_file
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    Path(path).with_suffix(".json").write_text(json.dumps({"feature_dim": model.feature_dim, **meta}, indent=1))


def load_pointnet(path: Path) -> PointNet:
    """The PointNet saved by :func:`save_pointnet` (safetensors; nothing is unpickled), in eval mode."""
    from safetensors.torch import load_file
    cfg = json.loads(Path(path).with_suffix(".json").read_text())
    model = PointNet(feature_dim=int(cfg["feature_dim"]))
    model.load_state_dict(load_file(str(path)))
    return model.eval()


# ---------------------------------------------------------------------------------------------
# the worked example of the ``python:`` encoder protocol (core/encoders_python.py)
# ---------------------------------------------------------------------------------------------
class PointNetPoints(nn.Module):
    """A :class:`PointNet` seen as a point-token encoder: ``forward`` gives the per-point features (``b x m x 128``;
    their max over points is the PointNet feature), ``forward_layers`` the outputs of the three per-point layers."""

    n_layers = 3

    def __init__(self, net: PointNet):
        super().__init__()
        self.net = net

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.net.point_features(points)

    def forward_layers(self, points: torch.Tensor) -> list[torch.Tensor]:
        x, out = points.transpose(1, 2), []
        for k, layer in enumerate(self.net.mlp):
            x = layer(x)
            if isinstance(layer, nn.ReLU) or k == len(self.net.mlp) - 1:
                out.append(x.transpose(1, 2))  # b x m x C after each of the three conv blocks
        return out

    def forward_all(self, points: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``forward`` and ``forward_layers`` in one pass (the last layer is the per-point output)."""
        layers = self.forward_layers(points)
        return layers[-1], layers


def platoscope_encoder(weights: str | Path | None = None) -> dict:
    """``python:core.demo.pointnet:platoscope_encoder``: the demo's trained PointNet for ``platoscope encode``.

    Loads ``weights`` (default ``$PLATOSCOPE_POINTNET_WEIGHTS``, else the demo's ``pointnet.safetensors``) with
    safetensors. The final embedding is the max over points (exactly :class:`PointNet`'s output), ``--layers``
    gives the three per-point layers max-pooled, ``--tokens`` the per-point features.
    """
    import hashlib
    import os
    from .paths import _artifact_dir
    path = Path(weights or os.environ.get("PLATOSCOPE_POINTNET_WEIGHTS") or _artifact_dir() / "pointnet.safetensors")
    net = load_pointnet(path)
    return {"module": PointNetPoints(net), "input": "pointcloud", "output": "tokens", "pool": "max",
            "layers": PointNetPoints.n_layers, "name": "pointnet",
            "version": hashlib.sha256(path.read_bytes()).hexdigest()}
