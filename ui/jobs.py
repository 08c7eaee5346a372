"""Background jobs in the app: the process's one :class:`core.jobs.JobRunner`, and the Streamlit glue.

``result(namespace, key, label, compute)`` is what a page calls instead of computing:

* a finished result comes back at once: from memory (this server process), else from the on-disk store
  (``cache/<namespace>/results/<key>.joblib``, written when the job succeeded, so a restarted server has it);
* otherwise the job for ``(namespace, key)`` is looked up (a reload or a page switch reattaches to it) or
  submitted, the page gets ``None`` and a progress box is drawn in its place: a fragment that polls the job
  every second (a queued one and a background one, such as GCPA's training, every 3 s: :func:`poll_seconds`;
  fraction, stage, elapsed, ETA, queue position, a Cancel button) and reruns the page once the job has
  finished. The rest of the page stays usable meanwhile.

``namespace`` is ``data.cache_namespace(ds)``: "shared" for the demo and server datasets (so two sessions asking
for the same result share one job and one file), the session's own for uploads (private jobs and files, removed
with "forget my data"). ``key`` is ``cached.result_key(...)``: a sha256 of the data's fingerprint and every
parameter that changes the numbers (never a plot option).
"""
from __future__ import annotations

import html
import os
import threading
from typing import Any, Callable

import streamlit as st

from core import cache as core_cache
from core.jobs import CANCELLED, DONE, FAILED, QUEUED, Job, JobRunner, ResultStore
from ui import cached
from ui.errors import show_error
from ui.text import md

#: a running job's box polls this often: the page redraws at most this long after its job finishes (half of it
#: on average). A poll costs a few milliseconds of the server's script thread but much more of the browser's
#: drawing: on the 31,000-item Universe view, with polls every 0.5 s, headless chromium used 3.3 CPU seconds in
#: 12 s of jobs (0.05 s with the page closed), and PW + GPA + GCCA took 25.2 / 27.4 s to show against 21.9 /
#: 23.0 s with polls every second (bench/bench_universe_app.py, interleaved, session 8). A poll that waited for
#: the job instead would keep Streamlit's "running" indicator on and delay the session's clicks, so it does not
POLL_SECONDS = 1.0
#: a queued job's box polls less often (its position changes only when a job ahead finishes, and that job's own
#: box reruns the page then): on the Universe view three of four boxes wait at any time
QUEUED_POLL_SECONDS = 3.0
#: a running background job's box (priority > 0: GCPA's training, minutes of epochs) polls this often: its bar
#: moves slowly, and each poll is drawing the browser does while a page may be loading beside it
BACKGROUND_POLL_SECONDS = 3.0
INLINE_WAIT = 0.5

_RUNNER: JobRunner | None = None
_RUNNER_LOCK = threading.Lock()


def runner() -> JobRunner:
    """The server process's job runner (created on first use)."""
    global _RUNNER
    with _RUNNER_LOCK:
        if _RUNNER is None:
            _RUNNER = JobRunner()
            _RUNNER.foreground_linger = foreground_linger(_RUNNER.foreground_linger)
            _register_shutdown(_RUNNER)
        return _RUNNER


def foreground_linger(default: float) -> float:
    """``$PLATOSCOPE_FOREGROUND_LINGER`` (seconds, 0-10) when set to a number, else ``default``: how long background
    jobs go on holding still after a page's script run (core.jobs)."""
    try:
        return max(0.0, min(10.0, float(os.environ.get("PLATOSCOPE_FOREGROUND_LINGER", default))))
    except ValueError:
        return default


def foreground():
    """``with foreground():`` around a page's script run (app.py): background jobs (GCPA training, priority 1)
    hold still until it ends, so a visit or a click while one trains is not slowed by it (core.jobs). A fragment's
    poll (a progress box) is not a script run of the page and does not count."""
    return runner().foreground()


def _register_shutdown(r: JobRunner) -> None:
    # threading's exit hooks run before the interpreter joins the executor's workers: cancel first, so a
    # server that is stopped does not wait for a long fit to finish.
    hook = getattr(threading, "_register_atexit", None)
    try:
        if hook is not None:
            hook(r.shutdown)
            return
    except RuntimeError:
        pass
    import atexit

    atexit.register(r.shutdown)


def store(namespace: str) -> ResultStore:
    return ResultStore(core_cache.namespace_dir(namespace) / "results")


def lookup(namespace: str, key: str) -> Any:
    """The finished result for ``key`` (memory, then disk, then a job that just finished), or None."""
    mem = cached._results_store(namespace)
    if key in mem:
        mem.move_to_end(key)
        return mem[key]
    job = runner().get((namespace, key))
    value = None
    if job is not None and job.state == DONE:
        value = job.result
    else:
        value = store(namespace).load(key)
    if value is not None:
        cached.remember(namespace, key, value)
        if job is not None and job.state == DONE:
            runner().forget((namespace, key))
    return value


def job_for(namespace: str, key: str) -> Job | None:
    return runner().get((namespace, key))


def known(namespace: str, key: str) -> bool:
    """Whether ``key`` has a finished result (memory or disk) or a job in any state (a page that starts a job
    later, e.g. after other results are drawn, asks this first: a known key is shown as usual)."""
    return job_for(namespace, key) is not None or lookup(namespace, key) is not None


def pending(namespace: str, key: str) -> bool:
    """Whether the job of ``key`` is queued or running."""
    job = job_for(namespace, key)
    return job is not None and not job.is_finished


#: How much lower than the server's own threads a job's thread runs (its nice value is raised by this much, once
#: per job thread; the threads torch starts from it inherit it); $PLATOSCOPE_JOB_NICE overrides, 0 turns it off.
JOB_NICE = 5
_THREAD = threading.local()


def job_nice() -> int:
    try:
        return max(0, min(19, int(os.environ.get("PLATOSCOPE_JOB_NICE", JOB_NICE))))
    except ValueError:
        return JOB_NICE


def _lower_job_thread_priority() -> None:
    """Raise the calling job thread's nice value to the server's + :func:`job_nice` (once per thread): a fit that
    keeps every core busy then leaves them to the script runs (a page's controls, a second visit's cached
    results), the server's event loop and, on a machine that serves its own browser, the browser's drawing. On an
    idle machine the job runs exactly as fast. A worker thread started from a job thread (the runner starts its
    threads when jobs are handed over) already has that value and keeps it. Linux only (elsewhere, or when
    refused, nothing changes)."""
    if getattr(_THREAD, "niced", False):
        return
    _THREAD.niced = True
    step = job_nice()
    if not step:
        return
    try:
        tid = threading.get_native_id()
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + step)    # the main thread's + step
        if os.getpriority(os.PRIO_PROCESS, tid) < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except (AttributeError, OSError):
        pass


def _at_job_priority(compute: Callable[[Job], Any]) -> Callable[[Job], Any]:
    def run(job: Job) -> Any:
        _lower_job_thread_priority()
        return compute(job)

    return run


def submit(namespace: str, key: str, label: str, compute: Callable[[Job], Any], priority: int = 0) -> Job:
    disk = store(namespace)
    return runner().submit((namespace, key), label, _at_job_priority(compute), priority=priority,
                           on_success=lambda value: disk.save(key, value))


#: live objects that several jobs of one computation share (e.g. a core.evaluation.UniverseStudy: one split, one
#: preprocessing and the fitted models behind the Universe view's per-method jobs); a few, least recently used
#: dropped first. Results themselves live in the result store; these only save recomputing shared inputs.
SHARED_KEPT = 2
_SHARED: "dict[tuple, Any]" = {}
_SHARED_LOCK = threading.Lock()


def shared(namespace: str, key: str, build: Callable[[], Any]) -> Any:
    """The live object for ``(namespace, key)``, built by ``build()`` on first use (on the caller's thread)."""
    with _SHARED_LOCK:
        k = (namespace, key)
        obj = _SHARED.pop(k, None)
        if obj is None:
            obj = build()
        _SHARED[k] = obj                        # most recent last
        while len(_SHARED) > SHARED_KEPT:
            _SHARED.pop(next(iter(_SHARED)))
        return obj


def cancel_namespace(namespace: str) -> None:
    """Cancel every job of one namespace (a session's "forget my data") and drop its shared objects."""
    with _SHARED_LOCK:
        for k in [k for k in _SHARED if k[0] == namespace]:
            del _SHARED[k]
    r = runner()
    for job in r.jobs():
        if isinstance(job.key, tuple) and job.key[0] == namespace:
            r.cancel(job.key)
            r.forget(job.key)           # finished (or queued, now cancelled): dropped with its result


def result(namespace: str, key: str, label: str, compute: Callable[[Job], Any], *, priority: int = 0,
           start: bool = True, partial: Callable[[Any], None] | None = None, wait: float = INLINE_WAIT) -> Any:
    """The result, or None while its job runs (a progress box is drawn here) or when it failed / was cancelled.

    ``compute(job)`` runs on the job runner (never touch ``st`` in it); pass ``job.progress`` as the core
    function's ``progress`` and, for results that fill in, call ``job.publish(partial_value)``;
    ``partial(value)`` then draws it under the progress bar. ``start=False`` only looks (a result computed on
    request). Lower ``priority`` runs first. A job that finishes within ``wait`` seconds of being started is
    shown in the same run (no progress box flashing by for quick results).
    """
    value = lookup(namespace, key)
    if value is not None:
        return value
    job = job_for(namespace, key)
    if job is None or (job.state in (FAILED, CANCELLED) and _restart_requested(key)) or _cancelled_elsewhere(job):
        if not start:
            return None
        job = submit(namespace, key, label, compute, priority)
        if wait > 0 and job.dispatched:     # a queued job will not finish in a moment: do not hold the page
            job.wait(wait)
    if job.state == DONE:
        return lookup(namespace, key)
    if job.state == FAILED:
        show_error(job.error or RuntimeError("the job failed"))
        st.button("Try again", key=f"job_retry_{key[:16]}", on_click=_request_restart, args=(key,))
        return None
    if job.state == CANCELLED:
        st.info(f"{md(label)}: cancelled after {job.elapsed:.1f} s. Nothing was saved.",
                icon=":material/cancel:")
        st.button("Run again", key=f"job_retry_{key[:16]}", on_click=_request_restart, args=(key,))
        return None
    _progress_box(namespace, key, partial)
    return None


def computed(namespace: str, key: str, label: str, compute: Callable[[Callable], Any], **kw) -> Any:
    """:func:`result` for a ``compute(progress)`` written for the tqdm-like progress wrapper."""
    return result(namespace, key, label, lambda job: compute(job.progress), **kw)


def _session_id() -> str | None:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return None if ctx is None else ctx.session_id


def _cancel(namespace: str, key: str) -> None:
    """The Cancel button: remembers which session cancelled, so that the others sharing the job are not told."""
    job = job_for(namespace, key)
    if job is not None:
        job.cancelled_by = _session_id()
    runner().cancel((namespace, key))


def _cancelled_elsewhere(job: Job) -> bool:
    """A shared job cancelled by another session: this session did not ask for that, so it runs again."""
    by = getattr(job, "cancelled_by", None)
    return job.state == CANCELLED and by is not None and by != _session_id()


def _restart_requested(key: str) -> bool:
    return bool(st.session_state.pop(f"job_restart_{key[:16]}", False))


def _request_restart(key: str) -> None:
    st.session_state[f"job_restart_{key[:16]}"] = True


def describe(job: Job, position: int) -> str:
    """One line: stage, elapsed, ETA (or the queue position)."""
    if job.state == QUEUED:
        return f"queued: position {position} (at most {runner().max_jobs} job(s) run at once)"
    if job.cancel_requested:
        return f"cancelling (at the next step) | {job.elapsed:.0f} s elapsed"
    if job.paused:
        return (f"paused while a job a page needs first runs (it goes on where it was) | {job.stage} | "
                f"{job.elapsed:.0f} s computed")
    eta = job.eta
    text = f"{job.stage} | {job.elapsed:.0f} s elapsed"
    if eta is not None:
        text += f", about {eta:.0f} s left"
    return text


def poll_seconds(job: Job | None) -> float:
    """How often a job's progress box polls: queued, running in the background (priority > 0), running."""
    if job is not None and job.state == QUEUED:
        return QUEUED_POLL_SECONDS
    if job is not None and job.priority > 0:
        return BACKGROUND_POLL_SECONDS
    return POLL_SECONDS


def _progress_box(namespace: str, key: str, partial) -> None:
    every = poll_seconds(job_for(namespace, key))

    @st.fragment(run_every=every)
    def _poll():
        job = job_for(namespace, key)
        if job is None or job.is_finished or poll_seconds(job) != every:
            st.rerun(scope="app")            # finished, or started: the page redraws (and the box polls anew)
        position = runner().position(job)
        # a bordered box, not st.status: Streamlit marks a status "complete" when the script run ends, while
        # the job goes on
        with st.container(border=True):
            icon = (":material/hourglass_top:" if job.state == QUEUED else ":material/pause_circle:" if job.paused
                    else ":material/progress_activity:")
            st.markdown(f"{icon} **{md(job.label)}**")
            st.progress(min(max(job.fraction, 0.0), 1.0), text=md(describe(job, position)))
            st.button("Cancel", key=f"job_cancel_{key[:16]}", icon=":material/cancel:",
                      on_click=_cancel, args=(namespace, key),
                      help="stops at the next step; nothing is saved")
            if partial is not None and job.partial is not None:
                partial(job.partial)
        st.html(f'<span class="ps-job-running" data-job="{job.id}" data-label="{html.escape(job.label, quote=True)}">'
                '</span>')

    _poll()
