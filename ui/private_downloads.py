"""Export downloads private to the session that made them: one-time download links.

Streamlit serves a download button's bytes at ``/media/<id>.<ext>`` to anyone who has the link, for as long as a
session references it. Every download in Platoscope is deferred (the bytes are made when the button is clicked, over
the clicking session's own websocket), so :func:`install` makes each such file one-shot: it is deleted from the
media store as soon as it has been fetched once (by the browser of the session that clicked), and a copied link
then answers 404 in any other browser. Clicking again regenerates the file. The patch touches two methods of
Streamlit's in-memory media store and is applied once per process.
"""
from __future__ import annotations

import os
import threading

_ONE_SHOT: set[str] = set()
_LOCK = threading.Lock()
_LOCAL = threading.local()


def one_shot_ids() -> set[str]:
    """Ids of generated downloads not fetched yet (for tests)."""
    with _LOCK:
        return set(_ONE_SHOT)


def install() -> bool:
    """Apply the patch (idempotent). Returns False when this Streamlit has no deferred downloads to patch."""
    try:
        from streamlit.runtime.media_file_manager import MediaFileManager
        from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    except ImportError:  # pragma: no cover
        return False
    if getattr(MediaFileManager, "_platoscope_private", False):
        return True
    if not hasattr(MediaFileManager, "execute_deferred"):  # pragma: no cover - an older Streamlit
        return False
    execute_deferred = MediaFileManager.execute_deferred
    get_file = MemoryMediaFileStorage.get_file
    get_url = MemoryMediaFileStorage.get_url

    def _execute_deferred(self, file_id: str) -> str:
        url = execute_deferred(self, file_id)
        actual = os.path.splitext(url.rsplit("/", 1)[-1])[0]
        with _LOCK:
            _ONE_SHOT.add(actual)
        return url

    def _get_url(self, file_id: str) -> str:
        _LOCAL.building_url = True
        try:
            return get_url(self, file_id)
        finally:
            _LOCAL.building_url = False

    def _get_file(self, filename: str):
        media = get_file(self, filename)
        if not getattr(_LOCAL, "building_url", False):  # a fetch of the file itself (the /media route)
            file_id = os.path.splitext(filename)[0]
            with _LOCK:
                fetched_once = file_id in _ONE_SHOT
                _ONE_SHOT.discard(file_id)
            if fetched_once:
                self.delete_file(file_id)
        return media

    MediaFileManager.execute_deferred = _execute_deferred
    MemoryMediaFileStorage.get_url = _get_url
    MemoryMediaFileStorage.get_file = _get_file
    MediaFileManager._platoscope_private = True
    return True
