"""User-written strings as text, never as markup: the one place the views escape what users wrote.

Captions, labels, ids, space names, column names, file and dataset names come from uploads or from server-side
datasets opened by link; a caption ``![x](http://host/t.png)`` rendered as markdown makes every viewer's browser
fetch that URL, and a label ``<b>x</b>`` in a plotly legend renders bold. So:

* :func:`md` - for anything inserted into a markdown string (``st.markdown``, ``st.caption``, ``st.write``,
  ``st.info``/``warning``/``success``/``error``, ``st.subheader``/``title``, ``st.status`` and widget labels):
  every character that can start markup on one line is backslash-escaped (links and images ``[``, code, emphasis,
  Streamlit's ``:color[..]`` directives and ``:icon:`` shortcodes, ``$`` maths, HTML and autolinks ``<``, headings
  / lists / quotes at the start), bare ``http://`` / ``www.`` / e-mail autolinks get an invisible word joiner, and
  line breaks become spaces;
  other punctuation stays as it is, so messages read the same in the page source;
* :func:`plot` - for plotly ``text`` / ``hovertext`` / ``customdata`` / trace ``name`` / titles / tick labels:
  ``html.escape`` (plotly renders its own tag subset from these strings; entities show as the characters).
* :func:`plots` - :func:`plot` over a sequence.

Tables (``st.dataframe``) and ``st.code`` / ``st.text`` show text as it is and need nothing.
"""
from __future__ import annotations

import html
import re
from typing import Any, Iterable

# What can start markup inside one line of Streamlit markdown, and nothing else (so messages stay readable in
# tests and logs): links / images / directives need '[', code '`', emphasis '*' '~' and a word-boundary '_',
# maths '$', HTML and autolinks '<', e-mail autolinks '@', and the backslash itself.
_MD_ALWAYS = re.compile(r"([\\`*\[\]~$<@])")
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# emoji shortcodes (:smile:, :+1:) and Streamlit's :material/icon: (spec strings such as 'open_clip:ViT-B-32:x'
# or 'hf:path' are left alone: no emoji name has capitals, dots, slashes or hyphens)
_MD_SHORTCODE = re.compile(r":(?=[a-z0-9_+]+:)|:(?=material/)")
# GFM autolink literals are found in the text *after* escapes are resolved, so escaping cannot stop them: a WORD
# JOINER (U+2060, invisible) inside 'http://', 'www.', 'mailto:' and before an e-mail's '@' breaks the pattern.
_WJ = "\u2060"
_MD_URL = re.compile(r"(?i)(?<=https)(?=://)|(?<=http)(?=://)|(?<=ftp)(?=://)|(?<=www)(?=\.)"
                     r"|(?<=mailto)(?=:)|(?<=xmpp)(?=:)|(?=\\@)")
_MD_LINE_START = re.compile(r"^(\s*)([#>+\-=]|\d+(?=[.)]))")  # headings, quotes, lists at the start


def md(value: Any) -> str:
    """``value`` as a markdown-safe string: shown literally by every Streamlit markdown element."""
    text = "" if value is None else str(value)
    text = re.sub(r"[\r\n\t\f\v]+", " ", text)
    text = _MD_ALWAYS.sub(r"\\\1", text)
    text = _MD_UNDERSCORE.sub(r"\\_", text)
    text = _MD_SHORTCODE.sub(r"\\:", text)
    text = _MD_URL.sub(_WJ, text)
    return _MD_LINE_START.sub(lambda m: m.group(1) + (m.group(2) + "\\" if m.group(2).isdigit()
                                                      else "\\" + m.group(2)), text)


def plot(value: Any) -> str:
    """``value`` for a plotly string property (text, hovertext, customdata, name, title, tick labels)."""
    return html.escape("" if value is None else str(value), quote=False)


def plots(values: Iterable[Any]) -> list[str]:
    return [plot(v) for v in values]


_TRACE_TEXT = ("name", "legendgroup", "text", "hovertext", "customdata", "x", "y", "z", "labels", "ids",
               "header", "cells")
_LAYOUT_TEXT = ("text", "title", "ticktext")


def _escape_value(value):
    """Escape strings (also inside lists / object arrays); numbers and other values pass unchanged."""
    import numpy as np

    if isinstance(value, str):
        return plot(value).replace("&lt;br&gt;", "<br>")  # the line break a view may put in a hover is kept
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OUS":
            flat = [_escape_value(v) for v in value.ravel().tolist()]
            out = np.empty(value.size, dtype=object)
            out[:] = flat
            return out.reshape(value.shape)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_escape_value(v) for v in value)
    return value


def _escape_layout(obj):
    if isinstance(obj, dict):
        return {k: (_escape_value(v) if k in _LAYOUT_TEXT and not isinstance(v, dict) else _escape_layout(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_escape_layout(v) for v in obj]
    return obj


def safe_figure(fig):
    """``fig`` with every data-bearing string escaped for plotly (trace names, text, hover text, customdata,
    categorical x / y, titles, annotations such as subplot titles, tick labels); hover/text templates written by
    the views are kept. Returns the same figure (changed in place). Selections then report escaped category
    names: :func:`unplot` turns them back."""
    if getattr(fig, "_platoscope_safe", False):  # already escaped (e.g. a figure kept across reruns)
        return fig
    for trace in fig.data:
        for prop in _TRACE_TEXT:
            try:
                value = trace[prop]
            except (KeyError, ValueError):
                continue
            if value is None:
                continue
            escaped = _escape_value(value)
            if escaped is not value:
                trace[prop] = escaped
    layout = fig.layout.to_plotly_json()
    fig.update_layout(_escape_layout(layout), overwrite=True)
    try:
        fig._platoscope_safe = True
    except Exception:  # noqa: BLE001 - plotly refused the attribute: escaping twice is then only cosmetic
        pass
    return fig


def unplot(value: Any) -> str:
    """The original string of a value :func:`safe_figure` escaped (e.g. a clicked heatmap cell's space name)."""
    return html.unescape(str(value))
