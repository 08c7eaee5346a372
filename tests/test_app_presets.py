"""The shared "Settings: paper X preset / custom" control (ui/presets.py): URL, one-line differences, manifests."""
import json

from streamlit.testing.v1 import AppTest


def _script():
    import json as _json

    import streamlit as st

    from ui import widgets
    from ui.presets import forget_current, preset_control

    real = st.download_button

    def spy(label, data=None, **kw):
        if label == "manifest.json":
            st.session_state["captured_manifest"] = _json.loads(data() if callable(data) else data)
        return real(label, data=data, **kw)

    st.download_button = spy
    try:
        forget_current()
        page = st.session_state.get("which", "D")
        if page != "none":
            choice = preset_control(page)
            st.session_state["choice_kwargs"] = choice.kwargs
        widgets.export_controls("x", manifest={"view": "test"})
    finally:
        st.download_button = real


def test_control_reads_the_url_shows_differences_and_stamps_the_manifest():
    at = AppTest.from_function(_script, default_timeout=60)
    at.query_params["preset"] = "paper_d"
    at.run()
    assert not at.exception, at.exception
    ctl = at.segmented_control(key="url__preset")
    assert ctl.value == "paper_d" and ctl.label == "Settings"
    text = " ".join(c.value for c in at.caption).replace("\\", "")
    assert text.startswith("paper D preset: the authors' code (acharaakshit/multiway-alignment)")
    manifest = at.session_state["captured_manifest"]
    assert manifest["view"] == "test" and manifest["preset"]["name"] == "paper_d"
    assert manifest["preset"]["settings"]["gcca_variant"] == "racing"
    assert at.session_state["choice_kwargs"] == {"preprocess_order": "pca-zscore", "gcca_variant": "racing",
                                                 "gcpa_schedule": "sampled"}
    ctl.set_value("custom").run()
    text = " ".join(c.value for c in at.caption).replace("\\", "")
    assert "custom: z-score, then PCA; the authors' code does PCA on the raw features, then z-score" in text
    assert at.session_state["captured_manifest"]["preset"]["name"] == "custom"
    assert at.query_params["preset"] == ["custom"] or at.query_params["preset"] == "custom"


def test_a_bad_url_value_falls_back_to_custom_and_pages_without_a_control_record_none():
    at = AppTest.from_function(_script, default_timeout=60)
    at.query_params["preset"] = "paper_z"
    at.run()
    assert at.segmented_control(key="url__preset").value == "custom"
    at.session_state["which"] = "none"
    at.run()
    assert at.session_state["captured_manifest"]["preset"] is None
    json.dumps(at.session_state["captured_manifest"])
