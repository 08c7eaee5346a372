"""Memory budgets that hold under attack: sizes are checked from headers *before* anything is inflated.

Two limits apply to every load:

* a per-load / per-session limit (``$PLATOSCOPE_SESSION_BUDGET_MB``, default 4096 MB, in the app and the CLI);
* a server-wide limit shared by every session of the process (``$PLATOSCOPE_SERVER_BUDGET_MB``, default
  :data:`DEFAULT_SERVER_FRACTION` of the machine's RAM), tracked by the process-wide :data:`LEDGER`.

A loader asks a :class:`MemoryBudget` for every array it is about to build in RAM (a compressed ``.npz`` member,
a Parquet column, a converted BF16 tensor, an image zip entry) with :meth:`MemoryBudget.charge`, giving the file,
the member and the size it read from the header; the budget raises :class:`~core.errors.BudgetError` naming
them and the limit that would be exceeded, before a single byte is inflated. Arrays memory-mapped from disk
cost nothing.

:class:`Reservation` objects are what the ledger counts: a session keeps its reservation in its own state, so
when the session ends (its state is garbage collected) the reservation stops counting; :meth:`Reservation.release`
frees it at once ("forget my data").
"""
from __future__ import annotations

import os
import threading
import weakref

from .errors import BudgetError, DataError

#: Default per-session budget in MB ($PLATOSCOPE_SESSION_BUDGET_MB).
DEFAULT_SESSION_MB = 4096
#: Default server-wide budget as a fraction of physical RAM ($PLATOSCOPE_SERVER_BUDGET_MB overrides).
DEFAULT_SERVER_FRACTION = 0.5


def fmt_bytes(n: int | float) -> str:
    """``1.5 GB``-style size (binary units)."""
    n = float(n)
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def _env_mb(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return None
    try:
        mb = float(raw)
    except ValueError:
        raise DataError(f"{name} must be a number of megabytes, got {raw!r}") from None
    if mb <= 0:
        raise DataError(f"{name} must be positive, got {raw!r}")
    return int(mb * (1 << 20))


def physical_ram_bytes() -> int:
    """Physical memory of the machine (8 GB when it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def session_budget_bytes() -> int:
    """The per-session budget: $PLATOSCOPE_SESSION_BUDGET_MB, else 4096 MB."""
    env = _env_mb("PLATOSCOPE_SESSION_BUDGET_MB")
    return env if env is not None else DEFAULT_SESSION_MB << 20


def server_budget_bytes() -> int:
    """The server-wide budget: $PLATOSCOPE_SERVER_BUDGET_MB, else half the machine's RAM."""
    env = _env_mb("PLATOSCOPE_SERVER_BUDGET_MB")
    return env if env is not None else int(physical_ram_bytes() * DEFAULT_SERVER_FRACTION)



class MemoryLedger:
    """Server-wide bookkeeping of the bytes every live :class:`Reservation` holds (thread-safe)."""

    def __init__(self, limit=server_budget_bytes):
        self._limit = limit
        self._lock = threading.RLock()
        self._live: "weakref.WeakSet[Reservation]" = weakref.WeakSet()

    @property
    def limit(self) -> int:
        return int(self._limit() if callable(self._limit) else self._limit)

    def reserved(self, exclude: "Reservation | None" = None) -> int:
        with self._lock:
            return sum(r.nbytes for r in list(self._live) if r is not exclude)

    def reservation(self, owner: str = "") -> "Reservation":
        """A new, empty reservation counted by this ledger while it is alive."""
        r = Reservation(self, owner)
        with self._lock:
            self._live.add(r)
        return r


class Reservation:
    """Bytes one owner (a session, a CLI run) holds against the server-wide budget."""

    def __init__(self, ledger: MemoryLedger, owner: str = ""):
        self.ledger = ledger
        self.owner = owner
        self.nbytes = 0

    def grow(self, nbytes: int, *, file: str | None = None, member: str | None = None,
             what: str = "needs") -> None:
        """Add ``nbytes``; BudgetError (nothing added) when the server-wide budget would be exceeded."""
        nbytes = int(nbytes)
        with self.ledger._lock:  # noqa: SLF001 - the ledger's own lock
            others = self.ledger.reserved(exclude=self)
            limit = self.ledger.limit
            if others + self.nbytes + nbytes > limit:
                raise BudgetError(
                    f"{what} {fmt_bytes(nbytes)} ({nbytes} bytes) of memory; the server's sessions already "
                    f"hold {fmt_bytes(others + self.nbytes)} and the server-wide budget is {fmt_bytes(limit)} "
                    f"(PLATOSCOPE_SERVER_BUDGET_MB)", file=file, array=member,
                    hint="try again later, use a memory-mappable format (.npy, .safetensors, uncompressed "
                         ".npz), or ask the operator to raise PLATOSCOPE_SERVER_BUDGET_MB")
            self.nbytes += nbytes

    def set(self, nbytes: int) -> None:
        """Set the held bytes to what was really kept (e.g. a loaded dataset's resident size)."""
        with self.ledger._lock:  # noqa: SLF001
            self.nbytes = max(0, int(nbytes))

    def release(self) -> None:
        self.set(0)


#: The process-wide ledger every session of a server (and a CLI run) reserves against.
LEDGER = MemoryLedger()


class MemoryBudget:
    """What one load may build in RAM: ``limit`` bytes (the session's remainder) and the server-wide ledger.

    Parameters
    ----------
    limit : bytes this load may keep resident (None: :func:`default_load_limit`).
    reservation : the server-wide reservation to grow (None: a fresh one from :data:`LEDGER`, released when the
        budget is dropped).
    label : how the limit is named in messages.
    hint : what to do when it is exceeded.
    """

    def __init__(self, limit: int | None = None, *, reservation: Reservation | None = None,
                 label: str | None = None, hint: str | None = None):
        server_bound = limit is None and server_budget_bytes() < session_budget_bytes()
        self.limit = default_load_limit() if limit is None else int(limit)
        self.reservation = reservation if reservation is not None else LEDGER.reservation("load")
        self.label = label or ("the server-wide memory budget (PLATOSCOPE_SERVER_BUDGET_MB)" if server_bound
                               else "the per-session memory budget (PLATOSCOPE_SESSION_BUDGET_MB)")
        self.hint = hint or ("use a format that is memory-mapped from disk (.npy, .safetensors, uncompressed .npz: "
                             "np.savez instead of np.savez_compressed), or raise PLATOSCOPE_SESSION_BUDGET_MB")
        self.used = 0

    def remaining(self) -> int:
        return self.limit - self.used

    def charge(self, nbytes: int, *, file: str | None = None, member: str | None = None,
               detail: str = "", what: str = "would inflate to") -> None:
        """Account for ``nbytes`` about to be built in RAM, or raise BudgetError *before* it is."""
        nbytes = int(nbytes)
        if nbytes <= 0:
            return
        if self.used + nbytes > self.limit:
            already = f" on top of {fmt_bytes(self.used)} already read" if self.used else ""
            raise BudgetError(
                f"{what} {fmt_bytes(nbytes)} ({nbytes} bytes){detail}{already}, over {self.label} of "
                f"{fmt_bytes(self.limit)}; nothing was inflated", file=file, array=member, hint=self.hint)
        self.reservation.grow(nbytes, file=file, member=member, what=what)
        self.used += nbytes


def default_load_limit() -> int:
    """A load's limit outside the app (CLI, notebooks): the per-session budget (4096 MB unless
    $PLATOSCOPE_SESSION_BUDGET_MB says otherwise), never more than the server-wide budget."""
    return min(session_budget_bytes(), server_budget_bytes())
