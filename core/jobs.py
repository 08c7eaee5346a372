"""Background jobs: one runner per process, a bounded number of jobs at a time, progress, cooperative cancel.

A :class:`JobRunner` runs callables ``compute(job)`` on a :class:`concurrent.futures.ThreadPoolExecutor`, at most
``max_jobs`` at once (its slots; the executor has twice as many threads, for paused jobs). Jobs wait in the
runner's own priority queue (lowest ``priority`` first, then first come) and are handed to the executor only when
a slot is free, so a queued job has a position
(:meth:`JobRunner.position`) and can be cancelled before it starts. Submitting a key that is queued, running or
finished returns the existing job (so two callers asking for the same result share one job); a cancelled or
failed job is replaced by a new one.

A running job reports through :meth:`Job.progress` (the tqdm-like ``progress(iterable, total=None, desc="")``
every long computation in ``core`` takes) or :meth:`Job.report` (the encoders' ``progress(done, total)``).
Nested loops nest: the fraction done is the outer loop's position plus the inner loop's share of one outer step.
Both check the job's cancel flag and raise :class:`Cancelled`, so cancelling takes effect at the next step.

**Background jobs step aside.** When every slot is taken and a job waits that outranks a running one (a lower
``priority``, e.g. a view's result while GCPA trains in the background at priority 1), the running job is asked
to pause: at its next progress step it gives its slot up and waits (holding its thread and memory, not the CPU)
until no waiting or running job outranks it, then goes on where it was. So a view's work never queues behind
minutes of background training, and still at most ``max_jobs`` jobs compute at once. A paused job's ``paused`` is
True; its ``elapsed`` counts computing time only, so its estimate of the time left stays meaningful; cancelling
it ends the pause at once.
**Background jobs hold still while the pages run.** :meth:`JobRunner.foreground` marks foreground work (the app
wraps every script run of a page in it): while any is going on, and for ``foreground_linger`` seconds (1.5) after
the last one ends (the server still sends its messages, the browser draws them), a background job (``priority > 0``)
waits at its next progress step instead of taking the CPU and the GIL from that run. It waits at most
``foreground_max_wait`` seconds per step (a page that never ends cannot starve it); a cancel ends the wait; the
time counts as paused, not computing. Jobs at priority 0 (what a view is waiting for) never hold still.
``job.publish(value)`` hands a partial result to readers (e.g. a curve that fills point by point).

On success the runner calls ``on_success(result)`` (e.g. :meth:`ResultStore.save`) before the job is marked
done (if that fails, e.g. a result that cannot be pickled, the job is still done, with ``persist_error`` set);
a cancelled or failed job writes nothing. :class:`ResultStore` writes each result atomically (temporary
file, then rename), so a reader never sees half a file, and a restarted process finds every finished result.

Threads, not processes: a job reads the same (often memory-mapped) arrays the app already holds, without
copying 10^5 x 10^3 matrices into another process, and torch and numpy release the GIL in their kernels.
torch's intra-op thread pool is process-wide (``torch.set_num_threads``), so the runner divides the cores once:
``threads = max(1, cores // max_jobs)`` (see docs/UI.md).
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable

__all__ = ["Cancelled", "Job", "JobRunner", "ResultStore", "default_max_jobs"]

log = logging.getLogger("platoscope.jobs")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class Cancelled(Exception):
    """Raised inside a job's computation (by its progress callback) once the job was cancelled."""


def default_max_jobs(cores: int | None = None) -> int:
    """``$PLATOSCOPE_MAX_JOBS``, else one job per 4 cores (at least 1): a 2-core machine runs one at a time."""
    env = os.environ.get("PLATOSCOPE_MAX_JOBS")
    if env:
        return max(1, int(env))
    cores = cores or os.cpu_count() or 1
    return max(1, cores // 4)


class Job:
    """One computation: state, progress (fraction, stage, elapsed, ETA), result or error, cancel flag."""

    def __init__(self, key: Hashable, label: str, compute: Callable[["Job"], Any], priority: int = 0,
                 on_success: Callable[[Any], None] | None = None):
        self.key = key
        self.label = label
        self.priority = int(priority)
        self.id = uuid.uuid4().hex[:12]
        self._compute = compute
        self._on_success = on_success
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._levels: list[list] = []        # [desc, done, total] per nested progress loop, outermost first
        self.state = QUEUED
        self.dispatched = False              # handed to a worker (no longer waiting for a free one)
        self.stage = "queued"
        self.submitted = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.result: Any = None
        self.partial: Any = None
        self.error: BaseException | None = None
        self.persist_error: BaseException | None = None
        self._fraction = 0.0
        # stepping aside for a job that outranks this one (JobRunner): asked, paused, resumed
        self.paused = False
        self.paused_seconds = 0.0
        self._paused_since: float | None = None
        self._pause_request = threading.Event()
        self._resume = threading.Event()
        self._pause_hook: Callable[["Job"], None] | None = None
        self._yield_hook: Callable[["Job"], None] | None = None   # holding still while the pages run
        self.holding = False                 # a background job waiting for foreground work to end
        self._holds_slot = False

    # -- reading ---------------------------------------------------------------------------------
    @property
    def fraction(self) -> float:
        if self.state == DONE:
            return 1.0
        with self._lock:
            f, scale = 0.0, 1.0
            for level in self._levels:
                done, total = level[1], level[2]
                if not total:
                    break
                f += scale * min(done, total) / total
                scale /= total
            return max(self._fraction, min(f, 1.0))

    @property
    def elapsed(self) -> float:
        """Seconds spent computing: since the start, less the time paused (see :class:`JobRunner`)."""
        if self.started is None:
            return 0.0
        now = self.finished or time.time()
        since = self._paused_since
        return max(0.0, now - self.started - self.paused_seconds - (now - since if since is not None else 0.0))

    @property
    def eta(self) -> float | None:
        """Seconds left, extrapolated from the fraction done (None until there is something to go by)."""
        f = self.fraction
        if self.state != RUNNING or f <= 0.01 or self.elapsed < 0.5:
            return None
        return self.elapsed * (1.0 - f) / f

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (any outcome). Returns whether it has."""
        return self._done.wait(timeout)

    def snapshot(self) -> dict:
        """What a progress display needs, read consistently."""
        return {"state": self.state, "label": self.label, "stage": self.stage, "fraction": self.fraction,
                "elapsed": self.elapsed, "eta": self.eta, "error": None if self.error is None else str(self.error)}

    # -- called by the computation -----------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`Cancelled` if the job was cancelled (call it between steps of long work); step aside
        (pause here) when the runner asks for this job's slot."""
        if self._cancel.is_set():
            raise Cancelled(self.label)
        if self._pause_request.is_set() and self._pause_hook is not None:
            self._pause_hook(self)
        if self.priority > 0 and self._yield_hook is not None:
            self._yield_hook(self)

    def progress(self, iterable: Iterable, total: int | None = None, desc: str = ""):
        """tqdm-like wrapper: yields the items, updates fraction and stage, raises Cancelled when asked."""
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        level = [desc or self.label, 0, total]
        with self._lock:
            self._levels.append(level)
            self.stage = self._stage_text()
        try:
            for item in iterable:
                self.check()
                yield item
                with self._lock:
                    level[1] += 1
                    self.stage = self._stage_text()
            self.check()
        finally:
            with self._lock:
                if level in self._levels:
                    # drop this loop and anything nested in it that was left open
                    del self._levels[self._levels.index(level):]
                self.stage = self._stage_text()

    def report(self, done: int, total: int, desc: str = "") -> None:
        """Encoder-style callback ``progress(done, total)``: sets the innermost fraction; raises Cancelled."""
        self.check()
        with self._lock:
            if self._levels and self._levels[-1][0] == (desc or "items") and self._levels[-1][3:] == ["report"]:
                self._levels[-1][1:3] = [done, total]
            else:
                self._levels.append([desc or "items", done, total, "report"])
            self.stage = self._stage_text()

    def publish(self, value: Any) -> None:
        """Make a partial result visible to readers while the job goes on."""
        self.partial = value

    def _stage_text(self) -> str:
        parts = []
        for desc, done, total, *_ in self._levels:
            parts.append(f"{desc} {done}/{total}" if total else f"{desc} {done}")
        return " > ".join(parts) if parts else self.label

    # -- control -----------------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    def _run(self) -> None:
        with self._lock:
            if self._cancel.is_set():
                self._finish(CANCELLED)
                return
            self.state, self.started, self.stage = RUNNING, time.time(), "starting"
        try:
            result = self._compute(self)
            self.check()
            if self._on_success is not None:
                try:
                    self._on_success(result)
                except Exception as exc:  # noqa: BLE001 - the result is still good; it is only not kept on disk
                    self.persist_error = exc
                    log.warning("job %s (%s): result not saved: %s", self.id, self.label, exc)
            self.result = result
            self._finish(DONE)
        except Cancelled:
            self._finish(CANCELLED)
        except BaseException as exc:  # noqa: BLE001 - the error is shown to the user
            self.error = exc
            log.info("job %s (%s) failed: %s", self.id, self.label, exc, exc_info=not _is_user_error(exc))
            self._finish(FAILED)

    def _finish(self, state: str) -> None:
        self.state = state
        self.stage = {DONE: "done", FAILED: "failed", CANCELLED: "cancelled"}[state]
        self.finished = time.time()
        self._compute = None  # type: ignore[assignment]  # drop references to the inputs
        self._done.set()


def _is_user_error(exc: BaseException) -> bool:
    from .errors import PlatoscopeError

    return isinstance(exc, PlatoscopeError)


class JobRunner:
    """At most ``max_jobs`` jobs at once; the rest wait in a priority queue; finished jobs are kept (LRU)."""

    def __init__(self, max_jobs: int | None = None, torch_threads: int | None = None, keep_finished: int = 32):
        self.max_jobs = int(max_jobs or default_max_jobs())
        cores = os.cpu_count() or 1
        self.torch_threads = int(torch_threads or max(1, cores // self.max_jobs))
        self._apply_threads()
        # twice max_jobs threads: a paused job keeps its thread (at most max_jobs are paused at once)
        self._executor = ThreadPoolExecutor(max_workers=2 * self.max_jobs, thread_name_prefix="platoscope-job")
        self._lock = threading.Lock()
        self._jobs: "OrderedDict[Hashable, Job]" = OrderedDict()
        self._queue: list = []                 # heap of (priority, seq, job)
        self._seq = itertools.count()
        self._running = 0                      # jobs holding a slot (computing)
        self._active: set = set()              # those jobs
        self._paused: list = []                # jobs that stepped aside, waiting for a slot
        self._keep = int(keep_finished)
        self._closed = False
        # foreground work (page script runs): background jobs hold still meanwhile (see the module's docstring)
        # after a run ends the server still sends its messages and the browser draws them: 1.2-1.5 s for the
        # Universe view on the 2-core machine, whose second visit while GCPA trained took 3.1-3.4 s with 0.25 s
        # here and 1.8-1.9 s with 1.5 s (bench/results/bench_app_session10.txt)
        self.foreground_linger = 1.5
        self.foreground_max_wait = 5.0
        self._foreground = 0
        self._foreground_ended = float("-inf")    # time.monotonic() when the last foreground work ended
        self._foreground_idle = threading.Event()
        self._foreground_idle.set()

    def _apply_threads(self, threads: int | None = None) -> None:
        try:
            import torch

            torch.set_num_threads(int(threads or self.torch_threads))
        except Exception:  # noqa: BLE001 - torch missing or refusing: jobs still run
            pass

    # -- submitting and looking up -----------------------------------------------------------------
    def submit(self, key: Hashable, label: str, compute: Callable[[Job], Any], *, priority: int = 0,
               on_success: Callable[[Any], None] | None = None) -> Job:
        """The job for ``key``: the existing one unless it failed or was cancelled, else a new one, queued."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the job runner is shut down")
            job = self._jobs.get(key)
            if job is not None and job.state not in (FAILED, CANCELLED) and not job.cancel_requested:
                self._jobs.move_to_end(key)
                if job.state == QUEUED and priority < job.priority:
                    job.priority = int(priority)
                    heapq.heappush(self._queue, (job.priority, next(self._seq), job))
                return job
            job = Job(key, label, compute, priority, on_success)
            self._jobs[key] = job
            heapq.heappush(self._queue, (job.priority, next(self._seq), job))
            self._trim()
        self._dispatch()
        return job

    def get(self, key: Hashable) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def position(self, job: Job) -> int:
        """0 while running (or finished), else 1 + the number of queued jobs ahead of it."""
        if job.state != QUEUED:
            return 0
        with self._lock:
            ranks: dict[str, tuple] = {}
            for p, s, j in self._queue:            # a job may sit in the heap twice (raised priority)
                if j.state == QUEUED and not j.cancel_requested:
                    ranks[j.id] = min(ranks.get(j.id, (p, s)), (p, s))
            mine = ranks.get(job.id)
            if mine is None:
                return 1
            return 1 + sum(1 for r in ranks.values() if r < mine)

    def cancel(self, key: Hashable) -> bool:
        job = self.get(key)
        if job is None or job.is_finished:
            return False
        job.cancel()
        with self._lock:
            if job.state == QUEUED:
                job._finish(CANCELLED)
        self._dispatch()
        return True

    def forget(self, key: Hashable) -> None:
        """Drop a finished job from the table (its result lives on wherever on_success put it)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.is_finished:
                del self._jobs[key]

    def wait_all(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running. Returns whether that happened within ``timeout``."""
        deadline = None if timeout is None else time.time() + timeout
        while True:
            pending = [j for j in self.jobs() if not j.is_finished]
            if not pending:
                return True
            left = None if deadline is None else deadline - time.time()
            if left is not None and left <= 0:
                return False
            pending[0].wait(None if left is None else min(left, 1.0))

    def shutdown(self) -> None:
        """Cancel everything (cooperatively) and stop the workers."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
            if job.state == QUEUED:
                job._finish(CANCELLED)
        self._executor.shutdown(wait=False, cancel_futures=True)

    @contextlib.contextmanager
    def foreground(self):
        """``with runner.foreground():`` work someone is waiting on right now (the app: each script run of a
        page). Background jobs (priority > 0) hold still at their next step until it ends (see the module's
        docstring). Nests, and may be entered from several threads at once."""
        with self._lock:
            self._foreground += 1
            self._foreground_idle.clear()
        try:
            yield self
        finally:
            with self._lock:
                self._foreground -= 1
                if self._foreground == 0:
                    self._foreground_ended = time.monotonic()
                    self._foreground_idle.set()

    def _busy_foreground(self) -> bool:
        return self._foreground > 0 or time.monotonic() - self._foreground_ended < self.foreground_linger

    def _yield_to_foreground(self, job: Job) -> None:
        """Called by a background job's ``check()``: wait while foreground work goes on (and its linger), at most
        ``foreground_max_wait`` seconds; a cancel ends the wait (:class:`Cancelled`)."""
        if not self._busy_foreground():
            return
        t0 = time.monotonic()
        deadline = t0 + float(self.foreground_max_wait)
        job.holding = True
        try:
            while self._busy_foreground() and not self._closed:
                now = time.monotonic()
                if now >= deadline:
                    break
                if self._foreground > 0:
                    self._foreground_idle.wait(min(0.1, deadline - now))
                else:                                      # ended: the linger's rest
                    time.sleep(max(0.0, min(self.foreground_linger - (now - self._foreground_ended), deadline - now)))
                if job._cancel.is_set():
                    raise Cancelled(job.label)
        finally:
            job.holding = False
            with job._lock:
                job.paused_seconds += time.monotonic() - t0

    # -- internals ---------------------------------------------------------------------------------
    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.is_finished]
        for k in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[k]

    def _head(self) -> Job | None:
        """The waiting job to run next (stale heap entries dropped); call with the lock held."""
        while self._queue:
            _, _, cand = self._queue[0]
            if cand.state == QUEUED and not cand.cancel_requested and not cand.dispatched:
                return cand
            heapq.heappop(self._queue)
        return None

    def _take_slot(self, job: Job) -> None:
        self._running += 1
        self._active.add(job)
        job._holds_slot = True

    def _give_slot(self, job: Job) -> None:
        if job._holds_slot:
            self._running -= 1
            job._holds_slot = False
        self._active.discard(job)

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                head = self._head()
                if self._running >= self.max_jobs:
                    # every slot is taken: a waiting job that outranks a running one asks it to step aside
                    if head is not None and len(self._paused) < self.max_jobs and \
                            not any(j._pause_request.is_set() for j in self._active):
                        victims = [j for j in self._active if j.priority > head.priority]
                        if victims:
                            max(victims, key=lambda j: j.priority)._pause_request.set()
                    return
                paused = min(self._paused, key=lambda j: j.priority, default=None)
                if paused is not None and (head is None or paused.priority <= head.priority):
                    self._paused.remove(paused)          # the best paused job goes on (on its own thread)
                    self._take_slot(paused)
                    paused._resume.set()
                    continue
                if head is None:
                    return
                heapq.heappop(self._queue)
                self._take_slot(head)
                head.dispatched = True
                head._pause_hook = self._pause
                head._yield_hook = self._yield_to_foreground
            self._executor.submit(self._work, head)

    def _apply_threads_for(self, job: Job) -> None:
        # a background job (priority > 0, e.g. GCPA training after the first results) leaves one core to the
        # page scripts when jobs run one at a time: the views stay responsive while it trains
        if self.max_jobs == 1 and self.torch_threads > 1:
            self._apply_threads(self.torch_threads - 1 if job.priority > 0 else self.torch_threads)

    def _pause(self, job: Job) -> None:
        """Called by ``job.check()`` on the job's thread when asked to step aside: gives the slot up and waits
        until :meth:`_dispatch` hands it back (or the job is cancelled: :class:`Cancelled`)."""
        with self._lock:
            job._pause_request.clear()
            head = self._head()
            if self._closed or not job._holds_slot or head is None or head.priority >= job.priority:
                return                                     # nothing outranks it any more: go on
            self._give_slot(job)
            job._resume.clear()
            self._paused.append(job)
            with job._lock:
                job.paused, job._paused_since = True, time.time()
        self._dispatch()
        try:
            while not job._resume.wait(0.2):
                if job._cancel.is_set():
                    with self._lock:
                        if job in self._paused:              # not handed a slot: end here
                            self._paused.remove(job)
                            raise Cancelled(job.label)
        finally:
            with job._lock:
                job.paused_seconds += time.time() - (job._paused_since or time.time())
                job.paused, job._paused_since = False, None
        self._apply_threads_for(job)
        job.check()

    def _work(self, job: Job) -> None:
        self._apply_threads_for(job)
        try:
            job._run()
        finally:
            with self._lock:
                self._give_slot(job)
                if job in self._paused:
                    self._paused.remove(job)
            if self.max_jobs == 1 and job.priority > 0:
                self._apply_threads()
            self._dispatch()


class ResultStore:
    """Finished results on disk, one file per key, written atomically (``<folder>/<key>.joblib``).

    Every file is written by Platoscope itself (joblib's pickle of the result dict); keys are sha256 hex
    digests, so a key cannot name a path outside the folder.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"result keys are hex digests, got {key!r}")
        return self.folder / f"{key}.joblib"

    def has(self, key: str) -> bool:
        return self._path(key).exists()

    def load(self, key: str, default: Any = None) -> Any:
        import joblib

        path = self._path(key)
        if not path.exists():
            return default
        try:
            value = joblib.load(path)
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed, not fatal
            log.warning("unreadable cached result %s; recomputing", path.name)
            path.unlink(missing_ok=True)
            return default
        try:
            os.utime(path)
        except OSError:
            pass
        return value

    def save(self, key: str, value: Any) -> Path:
        import joblib

        path = self._path(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{key}.{uuid.uuid4().hex}.tmp"
        try:
            joblib.dump(value, tmp, compress=0)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
