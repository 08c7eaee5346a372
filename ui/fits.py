"""Intermediate fits that several views share (live objects in memory)."""
from __future__ import annotations

import threading
from collections import OrderedDict

from core.align import AnchorMoments
from ui import cached

KEPT = 2
_MOMENTS: "OrderedDict[str, AnchorMoments]" = OrderedDict()
_LOCK = threading.Lock()


def pair_moments(ds, a: str, b: str, namespace: str) -> AnchorMoments:
    """The :class:`core.align.AnchorMoments` of spaces ``a`` (first) and ``b`` over every item. For the demo and
    server datasets they are accumulated once per pair, in either order, and shared by the fits on all items of
    that pair: the Neighbours view's CCA subspace and the Query view's alignment (on a 31,000-item study a pass
    over 31,000 x 1,792 values, once; the last ``KEPT`` pairs are kept). Uploads' are not kept (nothing of a
    session's data outlives "forget my data"). Call it from a job."""
    first, second = sorted((a, b))

    def build() -> AnchorMoments:
        return AnchorMoments.from_arrays(ds[first].vectors(), ds[second].vectors())

    if namespace != "shared":
        moments = build()
    else:
        key = cached.result_key("pair_moments", ds.fingerprint, first, second)
        with _LOCK:
            moments = _MOMENTS.pop(key, None)
            if moments is None:
                moments = build()
            _MOMENTS[key] = moments
            while len(_MOMENTS) > KEPT:
                _MOMENTS.popitem(last=False)
    return moments if (a, b) == (first, second) else moments.swapped()
