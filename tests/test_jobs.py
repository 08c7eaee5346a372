"""core/jobs.py: queueing, sharing, cancel, failure, progress and the on-disk store (events, never wall-clock)."""
import os
import threading
import time

import pytest
import torch

from core.errors import DataError
from core.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Cancelled, JobRunner, ResultStore

WAIT = 120  # generous: only bounds a hang, never a speed


@pytest.fixture
def runner():
    threads = torch.get_num_threads()
    r = JobRunner(max_jobs=1)
    yield r
    r.shutdown()
    torch.set_num_threads(threads)


def blocker(gate: threading.Event, started: threading.Event | None = None, value=1):
    def compute(job):
        if started is not None:
            started.set()
        for _ in job.progress(iter(lambda: gate.wait(0.05), True), desc="waiting"):
            pass
        return value
    return compute


def test_same_key_shares_one_job_and_one_result(runner):
    calls = []
    gate = threading.Event()

    def compute(job):
        calls.append(1)
        gate.wait(WAIT)
        return 42

    a = runner.submit("k", "answer", compute)
    b = runner.submit("k", "answer", compute)
    assert a is b
    gate.set()
    assert a.wait(WAIT) and a.state == DONE and a.result == 42
    assert runner.submit("k", "answer", compute) is a and calls == [1]


def test_queue_positions_and_priorities(runner):
    gate, started = threading.Event(), threading.Event()
    order = []
    first = runner.submit("first", "first", blocker(gate, started))
    assert started.wait(WAIT) and first.state == RUNNING and runner.position(first) == 0
    low = runner.submit("low", "low", lambda job: order.append("low"), priority=5)
    mid = runner.submit("mid", "mid", lambda job: order.append("mid"), priority=1)
    late = runner.submit("late", "late", lambda job: order.append("late"), priority=1)
    assert (low.state, mid.state) == (QUEUED, QUEUED)
    assert [runner.position(j) for j in (mid, late, low)] == [1, 2, 3]
    gate.set()
    assert runner.wait_all(WAIT)
    assert order == ["mid", "late", "low"]


def test_cancel_running_job_writes_nothing(runner, tmp_path):
    store = ResultStore(tmp_path / "results")
    gate, started = threading.Event(), threading.Event()
    key = "ab" * 32
    job = runner.submit(key, "long", blocker(gate, started), on_success=lambda v: store.save(key, v))
    assert started.wait(WAIT)
    assert runner.cancel(key)
    assert job.wait(WAIT) and job.state == CANCELLED
    assert not store.has(key) and not (tmp_path / "results").exists()
    # a new request after a cancel starts a new job
    again = runner.submit(key, "long", lambda j: 7, on_success=lambda v: store.save(key, v))
    assert again is not job and again.wait(WAIT) and again.result == 7 and store.load(key) == 7


def test_cancel_queued_job_never_runs(runner):
    gate, started = threading.Event(), threading.Event()
    ran = []
    runner.submit("a", "a", blocker(gate, started))
    assert started.wait(WAIT)
    queued = runner.submit("b", "b", lambda job: ran.append(1))
    runner.cancel("b")
    assert queued.state == CANCELLED
    gate.set()
    assert runner.wait_all(WAIT) and ran == []


def test_failure_is_kept_and_nothing_saved(runner, tmp_path):
    store = ResultStore(tmp_path)
    key = "cd" * 32

    def bad(job):
        raise DataError("space 'x' has 3 rows, expected 4")

    job = runner.submit(key, "bad", bad, on_success=lambda v: store.save(key, v))
    assert job.wait(WAIT) and job.state == FAILED and "3 rows" in str(job.error)
    assert not store.has(key)
    assert runner.submit(key, "bad", lambda j: 1) is not job


def test_failing_save_keeps_the_result_in_memory(runner):
    def save(value):
        raise OSError("disk full")

    job = runner.submit("k", "x", lambda j: 1, on_success=save)
    assert job.wait(WAIT) and job.state == DONE and job.result == 1 and "disk full" in str(job.persist_error)


def test_nested_progress_fraction_and_stage(runner):
    seen = {}

    def compute(job):
        for i in job.progress(range(2), desc="seeds"):
            for j in job.progress(range(4), desc="methods"):
                if (i, j) == (1, 2):
                    seen["fraction"], seen["stage"] = job.fraction, job.stage
        seen["after"] = job.stage
        return None

    job = runner.submit("p", "progress", compute)
    assert job.wait(WAIT) and job.state == DONE, job.error
    assert seen["fraction"] == pytest.approx((1 + 2 / 4) / 2)      # one seed done, two of four methods
    assert seen["stage"] == "seeds 1/2 > methods 2/4"
    assert job.fraction == 1.0


def test_encoder_style_report_and_cancel(runner):
    seen = []

    def compute(job):
        for done in range(0, 101, 10):
            job.report(done, 100, desc="encoding")
            seen.append(job.fraction)
            if done == 50:
                job.cancel()
        return 1

    job = runner.submit("e", "encode", compute)
    assert job.wait(WAIT) and job.state == CANCELLED
    assert seen == pytest.approx([d / 100 for d in range(0, 51, 10)])


def test_cancelled_exception_inside_compute_counts_as_cancel(runner):
    def compute(job):
        raise Cancelled("by hand")

    job = runner.submit("c", "c", compute)
    assert job.wait(WAIT) and job.state == CANCELLED


def test_torch_threads_are_divided_among_jobs():
    threads = torch.get_num_threads()
    try:
        r = JobRunner(max_jobs=2)
        assert r.torch_threads == max(1, (os.cpu_count() or 1) // 2)
        assert torch.get_num_threads() == r.torch_threads
        r.shutdown()
    finally:
        torch.set_num_threads(threads)


def test_a_background_job_leaves_one_core_to_the_pages():
    threads = torch.get_num_threads()
    try:
        r = JobRunner(max_jobs=1, torch_threads=2)
        seen = {}
        for key, priority in (("front", 0), ("background", 1)):
            job = r.submit(key, key, lambda job, key=key: seen.setdefault(key, torch.get_num_threads()),
                           priority=priority)
            assert job.wait(60) and job.state == DONE
        assert seen == {"front": 2, "background": 1}
        r.shutdown()
    finally:
        torch.set_num_threads(threads)


def test_result_store_survives_a_new_instance_and_refuses_odd_keys(tmp_path):
    key = "0f" * 32
    ResultStore(tmp_path).save(key, {"x": [1, 2, 3]})
    assert ResultStore(tmp_path).load(key) == {"x": [1, 2, 3]}
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.joblib"]        # no temporary file left behind
    with pytest.raises(ValueError):
        ResultStore(tmp_path).save("../../etc/passwd", 1)
    (tmp_path / f"{'ee' * 32}.joblib").write_bytes(b"not a joblib file")
    assert ResultStore(tmp_path).load("ee" * 32) is None                    # damaged entry: recompute


def test_a_shared_job_cancelled_by_one_session_runs_again_for_another(monkeypatch):
    """ui.jobs: session A's Cancel stops the shared job; session B, which did not cancel, gets it started again."""
    from ui import jobs as ui_jobs

    release = threading.Event()

    def slow(job):
        for _ in job.progress(range(1000)):
            release.wait(0.01)
        return 1

    monkeypatch.setattr(ui_jobs, "_session_id", lambda: "A")
    job = ui_jobs.runner().submit(("shared", "cancel-test"), "slow", slow)
    ui_jobs._cancel("shared", "cancel-test")
    assert job.wait(60) and job.state == CANCELLED and job.cancelled_by == "A"
    assert not ui_jobs._cancelled_elsewhere(job)          # A asked for it: A is told "cancelled"
    monkeypatch.setattr(ui_jobs, "_session_id", lambda: "B")
    assert ui_jobs._cancelled_elsewhere(job)              # B did not: B's page submits it again
    release.set()


@pytest.mark.skipif(not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"),
                    reason="per-thread nice values are a Linux feature")
def test_a_job_runs_at_a_lower_cpu_priority_than_the_server_threads(monkeypatch):
    """ui.jobs: a job's thread (and so the threads torch starts from it) is niced by JOB_NICE, once; the
    caller's thread keeps its priority."""
    from ui import jobs as ui_jobs

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = []

    def compute(job):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return 1

    for i in range(2):    # twice: the same worker thread is not niced again
        job = ui_jobs.submit("shared", f"nice-test-{os.getpid()}-{i}", "nice", compute)
        assert job.wait(WAIT) and job.state == DONE
    assert seen == [min(19, mine + ui_jobs.JOB_NICE)] * 2
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
    # a job that submits another (the runner may start the worker thread that runs it from this job's thread,
    # which then inherits this nice value): JOB_NICE once, never twice
    inner = []

    def outer(job):
        inner.append(ui_jobs.submit("shared", f"nice-test-{os.getpid()}-inner", "nice", compute, priority=1))
        return compute(job)

    job = ui_jobs.submit("shared", f"nice-test-{os.getpid()}-outer", "nice", outer)
    assert job.wait(WAIT) and job.state == DONE and inner[0].wait(WAIT) and inner[0].state == DONE
    assert seen[-2:] == [min(19, mine + ui_jobs.JOB_NICE)] * 2
    monkeypatch.setenv("PLATOSCOPE_JOB_NICE", "0")
    assert ui_jobs.job_nice() == 0
    monkeypatch.setenv("PLATOSCOPE_JOB_NICE", "not a number")
    assert ui_jobs.job_nice() == ui_jobs.JOB_NICE


def _stepper(steps: int, log: list, name: str, gate: threading.Event | None = None):
    def compute(job):
        for i in job.progress(range(steps), desc=name):
            if gate is not None:
                gate.wait(60)
            log.append((name, i))
            time.sleep(0.005)
        return name
    return compute


def test_a_waiting_job_that_outranks_a_background_one_runs_first_and_the_background_job_goes_on():
    """One slot, GCPA-like background training (priority 1) running: a view's job (priority 0) does not queue
    behind it; the background job pauses at its next step, without computing meanwhile, and then finishes
    every step."""
    log: list = []
    r = JobRunner(max_jobs=1, torch_threads=1)
    try:
        bg = r.submit("bg", "background", _stepper(400, log, "bg"), priority=1)
        while not any(name == "bg" for name, _ in log):
            time.sleep(0.01)
        seen = {}

        def front(job):
            seen["bg_paused"] = bg.paused
            seen["bg_steps"] = sum(1 for name, _ in log if name == "bg")
            time.sleep(0.3)                                   # the background job must not step meanwhile
            seen["bg_steps_after"] = sum(1 for name, _ in log if name == "bg")
            return "front"

        fg = r.submit("fg", "front", front, priority=0)
        assert fg.wait(WAIT) and fg.state == DONE
        assert seen["bg_paused"] and seen["bg_steps"] == seen["bg_steps_after"] < 400
        assert bg.wait(WAIT) and bg.state == DONE and bg.result == "bg" and not bg.paused
        assert [i for name, i in log if name == "bg"] == list(range(400))      # every step, once, in order
        assert bg.paused_seconds >= 0.3 and bg.elapsed < time.time() - bg.started
        assert r._running == 0 and not r._paused and not r._active
    finally:
        r.shutdown()


def test_equal_priorities_queue_and_a_paused_job_can_be_cancelled():
    log: list = []
    gate = threading.Event()
    r = JobRunner(max_jobs=1, torch_threads=1)
    try:
        first = r.submit("a", "a", _stepper(50, log, "a"), priority=0)
        second = r.submit("b", "b", _stepper(1, log, "b"), priority=0)        # same priority: waits its turn
        assert second.wait(WAIT) and [name for name, _ in log].index("b") == 50
        assert first.state == DONE
        bg = r.submit("bg", "bg", _stepper(10_000, log, "bg"), priority=2)
        while not any(name == "bg" for name, _ in log):
            time.sleep(0.01)
        fg = r.submit("fg", "fg", _stepper(1, log, "fg", gate), priority=1)    # outranks bg; held at its gate
        deadline = time.time() + WAIT
        while not bg.paused and time.time() < deadline:
            time.sleep(0.01)
        assert bg.paused
        r.cancel("bg")                                                          # ends the pause at once
        assert bg.wait(WAIT) and bg.state == CANCELLED
        gate.set()
        assert fg.wait(WAIT) and fg.state == DONE
        assert r._running == 0 and not r._paused and not r._active
    finally:
        gate.set()
        r.shutdown()


def test_a_paused_job_box_says_it_is_paused_and_counts_computing_time_only():
    from core.jobs import Job
    from ui import jobs as ui_jobs

    job = Job("k", "GCPA on 4 spaces", lambda job: None, priority=1)
    t = time.time()
    job.state, job.started, job.stage = RUNNING, t - 10.0, "GCPA epochs 3/100"
    job.paused_seconds = 4.0
    with job._lock:
        job.paused, job._paused_since = True, t - 2.0
    text = ui_jobs.describe(job, 0)
    assert text.startswith("paused while a job a page needs first runs") and "GCPA epochs 3/100" in text
    elapsed = job.elapsed                                  # 10 s since the start, less 4 + 2 s paused
    assert elapsed == pytest.approx(4.0, abs=1e-6)         # the current pause grows with the clock: still 4 s


def _count(log, name):
    return sum(1 for n, _ in log if n == name)


def _until(cond, what):
    deadline = time.time() + WAIT
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_background_job_holds_still_while_foreground_work_runs_and_a_view_job_does_not():
    """A page's script run (runner.foreground()) while GCPA-like training (priority 1) runs: the training holds
    still at its next step until the run ends (and its linger), then finishes every step in order; a job at
    priority 0 keeps computing meanwhile; the held time counts as paused."""
    log: list = []
    r = JobRunner(max_jobs=2, torch_threads=1)
    r.foreground_linger = 0.0
    try:
        bg = r.submit("bg", "background", _stepper(1000, log, "bg"), priority=1)
        _until(lambda: _count(log, "bg") > 0, "the background job's first step")
        with r.foreground():
            _until(lambda: bg.holding, "the background job to hold still")
            held = _count(log, "bg")
            front = r.submit("fg", "front", _stepper(40, log, "fg"), priority=0)
            assert front.wait(WAIT) and front.state == DONE             # ran while the foreground work went on
            assert _count(log, "bg") == held and bg.holding               # no background step meanwhile
        assert bg.wait(WAIT) and bg.state == DONE and not bg.holding
        assert [i for name, i in log if name == "bg"] == list(range(1000))
        assert bg.paused_seconds > 0 and r._foreground == 0
    finally:
        r.shutdown()


def test_a_background_job_goes_on_holding_still_for_the_linger_after_the_run():
    """After the page's run ends the browser still draws it: the background job takes its next step no sooner
    than foreground_linger seconds after the run ended (the default leaves the browser its 1.2-1.5 s)."""
    stamps: list = []

    def compute(job):
        for _ in job.progress(range(100000), desc="bg"):
            stamps.append(time.monotonic())
            time.sleep(0.002)

    threads = torch.get_num_threads()
    r = JobRunner(max_jobs=1, torch_threads=1)
    assert r.foreground_linger >= 1.0
    r.foreground_linger = 0.4
    try:
        bg = r.submit("bg", "background", compute, priority=1)
        _until(lambda: len(stamps) > 0, "the background job's first step")
        with r.foreground():
            _until(lambda: bg.holding, "the background job to hold still")
        ended = time.monotonic()
        _until(lambda: stamps[-1] > ended, "a step after the run")
        assert min(t for t in stamps if t > ended) - ended >= 0.4
        r.cancel("bg")
        assert bg.wait(WAIT)
    finally:
        r.shutdown()
        torch.set_num_threads(threads)


def test_holding_still_is_bounded_per_step_and_a_cancel_ends_it():
    log: list = []
    r = JobRunner(max_jobs=1, torch_threads=1)
    r.foreground_linger, r.foreground_max_wait = 0.0, 0.05
    try:
        with r.foreground(), r.foreground():             # nests; never left here while the job runs
            bg = r.submit("bg", "background", _stepper(20, log, "bg"), priority=1)
            assert bg.wait(WAIT) and bg.state == DONE     # one step per max_wait at worst: a stuck page cannot starve it
            r.foreground_max_wait = 60.0
            again = r.submit("bg2", "background", _stepper(1000, log, "bg2"), priority=1)
            _until(lambda: again.holding, "the second job to hold still")
            r.cancel("bg2")
            assert again.wait(WAIT) and again.state == CANCELLED
        assert r._foreground == 0 and r._foreground_idle.is_set()
    finally:
        r.shutdown()


def test_progress_boxes_poll_by_the_jobs_state_and_priority(runner):
    """A box polls a running view job every POLL_SECONDS, a queued one and a running background job (GCPA's
    training, priority > 0) less often; the box reruns the page when its job moves from one to the other."""
    from ui import jobs as ui_jobs

    gate, started, gate2, started2 = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    view = runner.submit("view", "view", blocker(gate, started))
    assert started.wait(WAIT)
    background = runner.submit("bg", "background", blocker(gate2, started2), priority=1)
    assert background.state == QUEUED
    assert ui_jobs.poll_seconds(view) == ui_jobs.POLL_SECONDS
    assert ui_jobs.poll_seconds(background) == ui_jobs.QUEUED_POLL_SECONDS
    gate.set()
    assert view.wait(WAIT) and started2.wait(WAIT) and background.state == RUNNING
    assert ui_jobs.poll_seconds(background) == ui_jobs.BACKGROUND_POLL_SECONDS > ui_jobs.POLL_SECONDS
    gate2.set()
    assert background.wait(WAIT)


def test_the_linger_setting_is_read_from_the_environment_and_bad_values_keep_the_default(monkeypatch):
    from ui.jobs import foreground_linger

    monkeypatch.delenv("PLATOSCOPE_FOREGROUND_LINGER", raising=False)
    assert foreground_linger(1.5) == 1.5
    for raw, want in (("0.25", 0.25), ("0", 0.0), ("-3", 0.0), ("99", 10.0), ("soon", 1.5), ("", 1.5)):
        monkeypatch.setenv("PLATOSCOPE_FOREGROUND_LINGER", raw)
        assert foreground_linger(1.5) == want, raw
