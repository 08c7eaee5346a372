"""core.results: typed results read like dicts, give JSON with to_dict(), keep deprecated keys as aliases."""
import copy
import json
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from core.results import ABSENT, Result, with_aliases


@dataclass(eq=False)
class Toy(Result):
    name: str
    top1: float
    extra: Any = ABSENT
    models: Any = ABSENT

    _aliases = {"hits_at_1": "top1"}
    _not_json = ("models",)


def test_reads_like_the_dict_it_replaced():
    r = Toy("a", 0.5)
    assert dict(r) == {"name": "a", "top1": 0.5} and r == {"name": "a", "top1": 0.5}
    assert "extra" not in r and r.get("extra", 7) == 7 and len(r) == 2
    assert {**r, "x": 1} == {"name": "a", "top1": 0.5, "x": 1}
    r["extra"] = [1, 2]
    assert r.extra == [1, 2] and list(r) == ["name", "top1", "extra"]
    r.top1 = 0.75                                   # attributes and keys stay in step
    assert r["top1"] == 0.75 and json.loads(json.dumps(r)) == {"name": "a", "top1": 0.75, "extra": [1, 2]}
    assert isinstance(r, dict)
    del r["extra"]
    assert r.extra is ABSENT and "extra" not in r
    r["note"] = "kept"                              # a key that is no field: kept, and in the JSON
    assert r.to_dict()["note"] == "kept" and r.pop("note") == "kept" and "note" not in r
    with pytest.raises(KeyError):
        r["nope"]


def test_to_dict_is_json_safe_with_aliases_and_without_private_fields():
    r = Toy("a", np.float64("nan"), extra=np.arange(3), models=object())
    with pytest.warns(DeprecationWarning, match="'hits_at_1' is deprecated; use 'top1'"):
        assert r["hits_at_1"] is r.top1
    d = r.to_dict()
    assert d == {"name": "a", "top1": None, "hits_at_1": None, "extra": [0, 1, 2]}
    assert list(d) == ["name", "top1", "hits_at_1", "extra"]      # the alias stands beside its new key
    json.dumps(d, allow_nan=False)
    assert with_aliases({"top1": 1, "mrr": 2}, {"hits_at_1": "top1"}) == {"top1": 1, "hits_at_1": 1, "mrr": 2}


def test_pickles_and_copies_keep_absent_fields_absent():
    r = Toy("a", 0.25)
    for back in (pickle.loads(pickle.dumps(r)), copy.deepcopy(r)):
        assert back.extra is ABSENT and dict(back) == dict(r)
