"""Imported by the server that bench/bench_universe_app.py starts (never by the app itself): appends one JSON line
per event to $PLATOSCOPE_TRACE_FILE - a job submitted / started / finished (core.jobs.Job) and a script run
started / finished (Streamlit's ScriptRunner) - with the wall-clock time, so the bench can line them up with what
the browser saw."""
import json
import os
import threading
import time

_OUT = open(os.environ["PLATOSCOPE_TRACE_FILE"], "a", buffering=1)
_LOCK = threading.Lock()


def _event(**kw):
    kw["t"] = time.time()
    with _LOCK:
        _OUT.write(json.dumps(kw) + "\n")


def install():
    import core.jobs as cj
    from streamlit.runtime.scriptrunner import script_runner as sr

    init, run = cj.Job.__init__, cj.Job._run

    def traced_init(self, key, label, *a, **k):
        init(self, key, label, *a, **k)
        _event(e="submit", label=label, id=self.id)

    def traced_run(self):
        _event(e="start", label=self.label, id=self.id)
        run(self)
        _event(e="end", label=self.label, id=self.id, state=self.state)

    cj.Job.__init__, cj.Job._run = traced_init, traced_run
    script = sr.ScriptRunner._run_script

    def traced_script(self, rerun_data):
        _event(e="script_start", fragment=bool(getattr(rerun_data, "fragment_id_queue", None)))
        try:
            return script(self, rerun_data)
        finally:
            _event(e="script_end")

    sr.ScriptRunner._run_script = traced_script
