"""The one early-stopping rule of the trained estimators (GCPA's corrector, point-set weights, RE fine-tuners).

:class:`EarlyStopping` keeps the best validated state and says when to stop: a check *improves* when its loss is
below the best so far by more than ``min_delta``; training stops after ``patience`` checks in a row without an
improvement. The state of an improving check is copied by ``snapshot()`` (so the caller restores the best
weights, not the last ones). The first candidate may be the untrained start (``start(value)``), as in paper D's
and the project's fits, or nothing (``best = inf``), as in the authors' sampled GCPA schedule.
"""
from __future__ import annotations

import math
from typing import Callable

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Best-state bookkeeping and the stopping rule (see the module docstring).

    Attributes
    ----------
    best : the lowest validated loss so far (``inf`` before any).  best_at : the epoch / step it came from.
    best_state : ``snapshot()`` of that check (None before any).  stale : checks since the last improvement.
    """

    def __init__(self, patience: int, min_delta: float, snapshot: Callable[[], object]):
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.snapshot = snapshot
        self.best = math.inf
        self.best_at = None
        self.best_state = None
        self.stale = 0

    def start(self, value: float, at=0) -> "EarlyStopping":
        """The untrained state is the first candidate (its loss ``value``, at epoch ``at``)."""
        self.best, self.best_at, self.best_state, self.stale = value, at, self.snapshot(), 0
        return self

    def take(self, value, at) -> None:
        """Keep this check's state unconditionally (no validation data to judge it by)."""
        self.best, self.best_at, self.best_state, self.stale = value, at, self.snapshot(), 0

    def update(self, value: float, at) -> bool:
        """Record a validated check; returns True when training should stop."""
        if value < self.best - self.min_delta:
            self.take(value, at)
            return False
        self.stale += 1
        return self.stale >= self.patience
