"""4-tier caption chains (generic -> specific) and same-tier negatives, generated from true attributes.

Tiers, for an object with attributes (size, support, adj, mat, detail):

0. the super-category: "furniture"
1. the category: "chair"
2. size and support: "tall chair with four legs"
3. everything: "a tall wooden chair with four thin legs and a high slatted backrest"

Each tier entails the one before it (it repeats all of its information). A negative at tier ``i`` contradicts the
positive at tier ``i`` while still entailing tier ``i - 1``:

* tier 0: another super-category ("lighting" for a chair);
* tier 1: another category of the same super-category ("stool": furniture, but not a chair);
* tier 2: the same category with one tier-2 attribute changed ("low chair with four legs");
* tier 3: the tier-2 text kept, one tier-3 attribute changed ("... with four thick legs ...").
"""
from __future__ import annotations

import numpy as np

from .shapes import DOMAINS, SUPER, SUPERS


def render_tier2(label: str, attrs: dict) -> str:
    det, noun = attrs["support"]
    return f"{attrs['size']} {label} with {det} {noun}"


def render_tier3(label: str, attrs: dict) -> str:
    det, noun = attrs["support"]
    return f"a {attrs['size']} {attrs['mat']} {label} with {det} {attrs['adj']} {noun} and {attrs['detail']}"


def caption_chain(label: str, attrs: dict) -> list[str]:
    """The 4 tiers from generic to specific."""
    return [SUPER[label], label, render_tier2(label, attrs), render_tier3(label, attrs)]


def _flip(rng, attrs: dict, keys, label: str) -> dict:
    key = keys[int(rng.integers(len(keys)))]
    domain = [v for v in DOMAINS[label][key] if v != attrs[key]]
    out = dict(attrs)
    out[key] = domain[int(rng.integers(len(domain)))]
    return out


def negative_chain(label: str, attrs: dict, rng: np.random.Generator) -> list[str]:
    """Same-tier negatives: element ``i`` contradicts tier ``i`` of the positive and entails its tier ``i - 1``."""
    sup = SUPER[label]
    neg0 = [s for s in SUPERS if s != sup][int(rng.integers(len(SUPERS) - 1))]
    siblings = [c for c, s in SUPER.items() if s == sup and c != label]
    neg1 = siblings[int(rng.integers(len(siblings)))]
    neg2 = render_tier2(label, _flip(rng, attrs, ("size", "support"), label))
    neg3 = render_tier3(label, _flip(rng, attrs, ("adj", "mat", "detail"), label))
    return [neg0, neg1, neg2, neg3]
