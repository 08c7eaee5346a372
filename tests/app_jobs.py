"""AppTest helpers for pages whose work runs as background jobs (ui/jobs.py).

A page's first run submits its jobs and paints at once (a progress box where the numbers will be); the test then
waits for the job runner to go idle - a generous bound that only catches a hang, never a speed - and reruns,
which is what the page's polling fragment does in a browser.
"""
from __future__ import annotations

JOB_WAIT = 900


def pending_jobs() -> list:
    from ui.jobs import runner

    return [j for j in runner().jobs() if not j.is_finished]


def finish_jobs(at, rounds: int = 4):
    """Wait for every job, rerun, and repeat while the rerun starts new ones (e.g. results in order of use)."""
    from ui.jobs import runner

    for _ in range(rounds):
        assert runner().wait_all(JOB_WAIT), "a job did not finish (hung?)"
        at.run()
        if not pending_jobs():
            break
    return at
