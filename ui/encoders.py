"""Encoders in the app: loaded once per server process (shared, read-only), used per session.

The model weights are shared; each session gets a shallow copy whose on-disk result cache is its own namespace,
so what one session encodes is never served to another.

``python:`` encoders import and run code, so the app offers only the shipped example (the demo's PointNet) and the
factories an administrator lists in ``$PLATOSCOPE_PYTHON_ENCODERS`` (comma-separated ``module:factory``); a spec
typed into a page, or read from an uploaded file's space info, never imports anything else.
"""
from __future__ import annotations

import copy
import os

import streamlit as st

from core.encoders import make_encoder, parse_model_spec
from core.encoders_python import EXAMPLE_SPEC
from core.errors import DataError


def allowed_python_encoders() -> list[str]:
    """The ``python:`` specs the app may run: the shipped PointNet plus ``$PLATOSCOPE_PYTHON_ENCODERS``."""
    extra = [s.strip() for s in os.environ.get("PLATOSCOPE_PYTHON_ENCODERS", "").split(",") if s.strip()]
    return [EXAMPLE_SPEC] + [s if s.startswith("python:") else f"python:{s}" for s in extra]


def check_allowed(spec: str) -> None:
    """DataError unless the app may build ``spec`` (every family but python:, whose specs must be listed)."""
    family, _, _ = parse_model_spec(spec)
    if family == "python" and spec.strip() not in allowed_python_encoders():
        raise DataError(f"the app does not run the python encoder {spec!r}",
                        hint="use `platoscope encode --model python:...` on your machine, or ask the administrator "
                             "to list it in PLATOSCOPE_PYTHON_ENCODERS")


@st.cache_resource(show_spinner="Loading the encoder (once per server) ...", max_entries=4)
def _shared_encoder(spec: str, pooling: str = "mean"):
    enc = make_encoder(spec, cache_namespace=None, pooling=pooling)
    enc.load()
    return enc


def encoder_for(spec: str, namespace: str, batch_size: int = 64, pooling: str = "mean"):
    """The encoder for ``spec`` (any family of :func:`core.encoders.make_encoder`), caching results under
    ``namespace``."""
    check_allowed(spec)
    enc = copy.copy(_shared_encoder(spec, pooling))
    enc.cache_namespace = namespace
    enc.batch_size = int(batch_size)
    return enc


def current_point_clouds(ds):
    """The point clouds of ``ds``, one per item, when the dataset has them (a token-set space of width 3, see
    :func:`core.geometry.item_point_clouds`), else None."""
    if ds is None:
        return None
    from core.geometry import item_point_clouds
    from core.pointclouds import PointClouds
    clouds = item_point_clouds(ds)
    if clouds is None:
        return None
    return PointClouds([str(i) for i in ds.ids], list(clouds), f"{ds.name} point clouds")
