"""Device and dtype choices shared by every computation.

``pick_device()`` returns CUDA when present, then Apple's MPS, then CPU; the environment variable
``PLATOSCOPE_DEVICE`` (e.g. ``cpu``) or an explicit argument overrides it.
"""
from __future__ import annotations

import os

import numpy as np
import torch


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device to compute on: ``device`` if given, else $PLATOSCOPE_DEVICE, else CUDA > MPS > CPU."""
    if device is None or device == "auto":
        device = os.environ.get("PLATOSCOPE_DEVICE") or None
    if device is not None and device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def float64_device(device: torch.device) -> torch.device:
    """A device that supports float64 (MPS does not: fall back to CPU there)."""
    return torch.device("cpu") if device.type == "mps" else device


def as_tensor(x, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A torch tensor on ``device`` with ``dtype`` from a numpy array (memmaps included) or tensor."""
    device = pick_device(device)
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    arr = np.asarray(x)
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr).copy() if not arr.flags.writeable else np.ascontiguousarray(arr)
    return torch.from_numpy(arr).to(device=device, dtype=dtype)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
