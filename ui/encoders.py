"""Encoders in the app: loaded once per server process (shared, read-only), used per session.

The model weights are shared; each session gets a shallow copy whose on-disk result cache is its own namespace,
so what one session encodes is never served to another.
"""
from __future__ import annotations

import copy

import streamlit as st

from core.encoders import MiniLMEncoder, make_encoder


@st.cache_resource(show_spinner="Loading the encoder (once per server) ...", max_entries=4)
def _shared_encoder(spec: str):
    enc = make_encoder(spec, cache_namespace=None)
    if isinstance(enc, MiniLMEncoder):
        enc.sentence_transformer()
    else:
        enc.load()
    return enc


def encoder_for(spec: str, namespace: str, batch_size: int = 64):
    """The encoder for ``spec`` ('minilm' or 'open_clip:MODEL:TAG'), caching results under ``namespace``."""
    enc = copy.copy(_shared_encoder(spec))
    enc.cache_namespace = namespace
    enc.batch_size = int(batch_size)
    return enc
