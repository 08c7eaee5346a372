"""Errors that the app and the CLI turn into clear messages (never tracebacks).

Every problem caused by the user's input raises :class:`DataError` (a ``ValueError``)
carrying *where* the problem is (file, array or column, row) and *what to do*.
The CLI prints ``str(err)`` and exits with code 2; the app shows it in ``st.error``.
"""
from __future__ import annotations


class PlatoscopeError(Exception):
    """Base class of every error Platoscope raises on purpose."""


class DataError(PlatoscopeError, ValueError):
    """Bad input: a file, array, column or row that cannot be used as it is.

    Parameters
    ----------
    message : what is wrong, in one sentence.
    file : the file's name (as the user knows it, not a spool path).
    array : the array / space / tensor name inside the file.
    column : the column of a table.
    row : 0-based row index of the first offending row.
    hint : what the user can do about it.
    """

    def __init__(self, message: str, *, file: str | None = None, array: str | None = None,
                 column: str | None = None, row: int | None = None, hint: str | None = None):
        self.message = message
        self.file = file
        self.array = array
        self.column = column
        self.row = row
        self.hint = hint
        super().__init__(str(self))

    def where(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}")
        if self.array:
            parts.append(f"array '{self.array}'")
        if self.column:
            parts.append(f"column '{self.column}'")
        if self.row is not None:
            parts.append(f"row {self.row}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text = f"{text} -> {self.hint}"
        return text

    def with_file(self, file: str) -> "DataError":
        """The same error, naming ``file`` (used when a spool path stands in for an upload)."""
        return DataError(self.message, file=file, array=self.array, column=self.column,
                         row=self.row, hint=self.hint)

    def to_dict(self) -> dict:
        return {"error": self.message, "file": self.file, "array": self.array,
                "column": self.column, "row": self.row, "hint": self.hint}


class BudgetError(DataError):
    """A session or a file would exceed a configured memory / size budget."""


def _make_not_fitted_error():
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    class NotFittedError(DataError, SklearnNotFittedError):
        """An estimator was used before ``fit`` (also a scikit-learn ``NotFittedError``, so scikit-learn's tools
        recognise it, and a :class:`DataError`, so the app and the CLI show it as a message)."""

    NotFittedError.__module__ = __name__
    NotFittedError.__qualname__ = "NotFittedError"
    return NotFittedError


def __getattr__(name):
    # NotFittedError subclasses scikit-learn's, which costs scikit-learn's import (about a second): build it on
    # first use, so that ``import core`` stays fast for the CLI and the app's first page
    if name == "NotFittedError":
        cls = _make_not_fitted_error()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
