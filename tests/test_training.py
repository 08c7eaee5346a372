"""core.training.EarlyStopping on hand-worked loss sequences."""
import math

from core.training import EarlyStopping


def _run(losses, patience, min_delta, start=None):
    states = iter(range(100))
    es = EarlyStopping(patience, min_delta, lambda: next(states))
    if start is not None:
        es.start(start, 0)
    stopped_at = None
    for epoch, v in enumerate(losses, 1):
        if es.update(v, epoch):
            stopped_at = epoch
            break
    return es, stopped_at


def test_keeps_the_best_and_stops_after_patience_checks_without_improvement():
    es, stopped = _run([0.9, 0.8, 0.85, 0.8, 0.81], patience=3, min_delta=0.0, start=1.0)
    # 0.8 at epoch 2 is the best; 0.85, 0.8 (not strictly lower) and 0.81 are three non-improvements
    assert (es.best, es.best_at, stopped, es.stale) == (0.8, 2, 5, 3)
    assert es.best_state == 2          # snapshots: start -> 0, epoch 1 -> 1, epoch 2 -> 2


def test_min_delta_and_nan():
    es, stopped = _run([1.0 - 5e-7, float("nan"), 0.5], patience=2, min_delta=1e-6, start=1.0)
    # an improvement smaller than min_delta and a NaN both count as no improvement
    assert stopped == 2 and es.best == 1.0 and es.best_at == 0


def test_without_a_start_the_first_check_is_the_first_candidate():
    es, stopped = _run([3.0, 2.0], patience=5, min_delta=0.0)
    assert es.best == 2.0 and es.best_at == 2 and stopped is None
    fresh = EarlyStopping(1, 0.0, lambda: "s")
    assert fresh.best == math.inf and fresh.best_state is None
    fresh.take(None, 4)
    assert fresh.best_at == 4 and fresh.best_state == "s"
