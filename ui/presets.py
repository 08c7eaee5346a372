"""The "Settings: paper X preset / custom" control every paper view shares (core.presets underneath).

One call per page, right after its header::

    preset = preset_control("D")

draws a two-way control bound to the URL (``?preset=paper_d``), shows in one line per setting where the choice
departs from the authors' code (or, under the preset, where the project's default would), remembers the choice
for this page run so that every export manifest of the page records it (``preset`` key), and returns a
:class:`PresetChoice` whose ``kwargs`` go straight into the page's core call.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from core import presets as core_presets
from ui.text import md
from ui.url_state import sync_url, url_key

_CURRENT = "platoscope_current_preset"


@dataclass(frozen=True)
class PresetChoice:
    """The preset a page runs under: its name (``custom`` or ``paper_x``), the paper, the settings dataclass, and
    the JSON-ready record stored in results and manifests."""

    name: str
    paper: str
    settings: object
    record: dict = field(default_factory=dict)

    @property
    def is_preset(self) -> bool:
        return self.name != core_presets.CUSTOM

    @property
    def kwargs(self) -> dict:
        """Keyword arguments of the page's core call under this choice."""
        s = self.settings
        if self.paper == "D":
            kw = s.universe_kwargs()
            kw.pop("gcpa_epochs", None)          # the page's own GCPA epochs box stays in charge
            return kw
        if self.paper == "C":
            return {"tau": s.tau, "retrieval_pool": s.retrieval_pool}
        if self.paper == "B":
            return s.pointset_kwargs()
        return {}


def current_record() -> dict | None:
    """The preset record of the page being drawn (None on pages without a preset control)."""
    return st.session_state.get(_CURRENT)


def forget_current() -> None:
    """Called at the start of every page: no preset until the page draws its control."""
    st.session_state.pop(_CURRENT, None)


def preset_control(paper: str, *, only: tuple | None = None, actual: dict | None = None) -> PresetChoice:
    """Draw "Settings: paper X preset / custom" for paper ``paper`` ('A'..'D'), bound to the URL setting
    ``preset``, with the one-line differences below it. ``only`` restricts the settings shown to those the page
    uses (e.g. :data:`core.presets.PROTOCOL_FIELDS`); ``actual`` holds settings the page's own widgets decide
    (e.g. ``k``), which are then compared with the authors' values too."""
    paper = paper.upper()
    preset = core_presets.PRESETS[f"paper_{paper.lower()}"]
    options = [core_presets.CUSTOM, preset.name]
    labels = {core_presets.CUSTOM: "custom (the project's defaults)",
              preset.name: f"paper {paper} preset (the authors' code)"}
    name = st.segmented_control(
        "Settings", options, format_func=labels.get, key=url_key("preset", core_presets.CUSTOM, options),
        required=True, help=f"paper {paper} preset: reproduce {preset.code} exactly; custom: the project's defaults "
                            "(each difference is listed below)")
    name = name or core_presets.CUSTOM
    sync_url(preset=name)
    settings = core_presets.settings_for(paper, name)
    if actual:
        settings = settings.replace(**actual)
    record = core_presets.record(paper, name, settings, only=only)
    st.caption("  \n".join(md(line) for line in record["differences"]))
    st.session_state[_CURRENT] = record
    return PresetChoice(name, paper, settings, record)
