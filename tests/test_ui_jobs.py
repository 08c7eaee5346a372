"""ui.jobs: a job reruns the pages that show its box when it starts and when it finishes (the push that replaces
waiting for the box's poll), through the session's last client state, only on the page that drew the box."""
import threading

import pytest
from streamlit.proto.ClientState_pb2 import ClientState

from core.jobs import CANCELLED, DONE, JobRunner
from ui import jobs as ui_jobs

WAIT = 120  # only bounds a hang


class FakeLoop:
    def __init__(self):
        self.calls = []

    def call_soon_threadsafe(self, fn, *args):
        self.calls.append((fn, args))
        fn(*args)


class FakeSession:
    """The three members of Streamlit's AppSession that the push uses."""

    def __init__(self, page: str, fragment: str = ""):
        self._client_state = ClientState()
        self._client_state.page_script_hash = page
        self._client_state.fragment_id = fragment
        self._client_state.is_auto_rerun = bool(fragment)
        self._client_state.query_string = "dataset=server%3Astudy"
        self._event_loop = FakeLoop()
        self.reruns: list[ClientState] = []
        self.thread_ids: list[int] = []

    def request_rerun(self, state):
        self.reruns.append(state)
        self.thread_ids.append(threading.get_ident())


@pytest.fixture
def sessions(monkeypatch):
    table: dict[str, FakeSession] = {}
    monkeypatch.setattr(ui_jobs, "_session_of", lambda sid: table.get(sid))
    monkeypatch.setattr(ui_jobs, "_WATCHERS", {})
    return table


def test_a_page_rerun_is_asked_with_the_last_client_state_and_no_fragment(sessions):
    # the session's last run was a fragment's poll: the push asks for the whole page, same query and page
    sessions["s1"] = s = FakeSession("page-universe", fragment="frag-123")
    assert ui_jobs._request_page_rerun("s1", "page-universe")
    (state,) = s.reruns
    assert state.page_script_hash == "page-universe" and state.fragment_id == "" and not state.is_auto_rerun
    assert state.query_string == "dataset=server%3Astudy"
    assert s._client_state.fragment_id == "frag-123"          # the session's own state is left alone
    assert len(s._event_loop.calls) == 1                      # handed to the event loop, not called directly


def test_no_rerun_for_another_page_a_gone_session_or_odd_internals(sessions):
    sessions["s1"] = s = FakeSession("page-home")
    assert not ui_jobs._request_page_rerun("s1", "page-universe")      # the user moved on
    assert not ui_jobs._request_page_rerun("nobody", "page-universe")  # the session ended
    assert s.reruns == []
    sessions["odd"] = object()                                          # internals not as expected
    assert not ui_jobs._request_page_rerun("odd", "page-universe")


def test_watchers_are_rerun_when_the_job_starts_and_ends_then_forgotten(sessions):
    sessions["a"], sessions["b"] = FakeSession("p1"), FakeSession("p2")
    runner = JobRunner(max_jobs=1)
    try:
        gate, started = threading.Event(), threading.Event()

        def blocker(job):
            started.set()
            for _ in job.progress(iter(lambda: gate.wait(0.05), True), desc="waiting"):
                pass
            return 1

        first = runner.submit("first", "first", blocker)
        assert started.wait(WAIT)
        queued = runner.submit("q", "q", lambda job: 2)
        # two sessions show the queued job's box: a on p1, b on p2 (b then moves to another page)
        for sid, page in (("a", "p1"), ("b", "p2")):
            with ui_jobs._WATCHERS_LOCK:
                ui_jobs._WATCHERS.setdefault(queued.id, set()).add((sid, page))
        queued.add_listener(ui_jobs._rerun_watchers)
        sessions["b"]._client_state.page_script_hash = "p3"
        gate.set()
        assert runner.wait_all(WAIT) and first.state == DONE and queued.state == DONE
        assert len(sessions["a"].reruns) == 2                 # started, finished
        assert sessions["b"].reruns == []                     # not on that page any more
        assert queued.id not in ui_jobs._WATCHERS             # forgotten once finished
        # a job cancelled in the queue reruns its watchers once
        gate2, started2 = threading.Event(), threading.Event()

        def blocker2(job):
            started2.set()
            for _ in job.progress(iter(lambda: gate2.wait(0.05), True), desc="waiting"):
                pass

        runner.submit("busy", "busy", blocker2)
        assert started2.wait(WAIT)
        doomed = runner.submit("doomed", "doomed", lambda job: 3)
        with ui_jobs._WATCHERS_LOCK:
            ui_jobs._WATCHERS[doomed.id] = {("a", "p1")}
        doomed.add_listener(ui_jobs._rerun_watchers)
        runner.cancel("doomed")
        gate2.set()
        assert runner.wait_all(WAIT) and doomed.state == CANCELLED
        assert len(sessions["a"].reruns) == 3
    finally:
        runner.shutdown()


def test_push_is_unavailable_outside_a_server_run():
    # no script run context (a plain test process): the boxes fall back to polling
    assert ui_jobs.push_available() is False
