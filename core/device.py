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


def has_fast_bfloat16(device: str | torch.device | None = None) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (faster than float32).

    CPU: oneDNN reports the AVX-512 BF16 or AMX instructions; CUDA: ``torch.cuda.is_bf16_supported()``;
    anything else: False."""
    dev = pick_device(device)
    if dev.type == "cpu":
        probe = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
        try:
            return bool(torch.backends.mkldnn.is_available() and probe is not None and probe())
        except (RuntimeError, AttributeError):
            return False
    if dev.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return False


def float64_device(device: torch.device) -> torch.device:
    """A device that supports float64 (MPS does not: fall back to CPU there)."""
    return torch.device("cpu") if device.type == "mps" else device


def pick_float64_device(device: str | torch.device | None = None) -> torch.device:
    """:func:`pick_device`, on CPU where the device has no float64 (MPS): where float64 work runs."""
    return float64_device(pick_device(device))


def as_tensor(x, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
              copy: bool = False) -> torch.Tensor:
    """A torch tensor on ``device`` with ``dtype`` from a numpy array (memmaps included), array-like or tensor.

    Values convert exactly (numpy -> torch first, then the dtype change). A writeable C-contiguous array may share
    memory with the result on the CPU; ``copy=True`` never does. A read-only or strided array (e.g. a memmap
    opened read-only) is copied.
    """
    device = pick_device(device)
    if isinstance(x, torch.Tensor):
        out = x.to(device=device, dtype=dtype)
        return out.clone() if copy and out.data_ptr() == x.data_ptr() else out
    arr = np.asarray(x)
    if copy or not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, order="C", copy=True)
    return torch.from_numpy(arr).to(device=device, dtype=dtype)


def as_float64(x, device: str | torch.device | None = None, copy: bool = False) -> torch.Tensor:
    """``as_tensor(x, device, torch.float64, copy)``: the float64 input of every exact computation."""
    return as_tensor(x, device, torch.float64, copy)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A C-contiguous numpy array of a tensor (on the CPU; fitted state keeps one memory layout, so saved maps
    reproduce exactly)."""
    return np.ascontiguousarray(t.detach().cpu().numpy())
