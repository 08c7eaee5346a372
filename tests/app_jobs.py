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


def svgcharts(at, kind: str | None = None) -> list[dict]:
    """The arguments of the page's SVG charts (ui.svgchart: a components-v2 element whose data is the arguments'
    JSON text), in page order; only those of ``kind`` ("heatmap" / "bars") when given."""
    import json

    found = [json.loads(json.loads(e.proto.json)) for e in at.get("bidi_component")
             if e.proto.component_name == "platoscope_svgchart"]
    return [a for a in found if kind is None or a.get("kind") == kind]


def canvas_maps(at) -> list[dict]:
    """The canvas maps on the page (ui.maps: a components-v2 element whose data is ui.maps.map_payload), in page
    order: each payload's header, with ``coords``, ``codes`` and ``hover`` as the bytes the browser reads (None
    when absent)."""
    from ui.maps import read_map_payload

    out = []
    for e in at.get("bidi_component"):
        if e.proto.component_name != "platoscope_map":
            continue
        args = read_map_payload(e.proto.bytes)
        args["coords"] = args["coords"].tobytes()
        args["codes"] = None if args["codes"] is None else args["codes"].tobytes()
        out.append(args)
    return out
