"""The one data model: an items table plus named spaces, all rows paired by item.

A :class:`Dataset` holds

* ``items`` - a pandas DataFrame, one row per item, with a unique string ``id`` column and any of the
  conventional columns ``caption``, ``label``, ``tier``, ``chain``, ``group``, ``path``, ``image_url``
  (plus whatever metadata the user brings);
* ``spaces`` - named :class:`Space` objects. A space is either a set of vectors (``n x d``) or a set of
  token sets (``n x T x d``, with an optional ``n x T`` mask and/or weights). Row ``i`` of every space
  describes item ``i``. A :class:`LazySpace` is computed on first use (e.g. per-token outputs of an encoder).

Arrays may be ``numpy.memmap`` views of files on disk; nothing here copies them unless asked.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from .errors import DataError

MODALITIES = ("text", "image", "3d", "audio", "other")
ITEM_COLUMNS = ("id", "caption", "label", "tier", "chain", "group", "path", "image_url")

_MODALITY_PATTERNS = [
    ("3d", r"(^|[^a-z])(3d|point|pointnet|pc|shape|mesh|voxel|cloud|d2|geom|descriptor)"),
    ("image", r"(^|[^a-z])(image|img|vision|visual|vit|dino|resnet|pixel|photo|clip_image|clip-image)"),
    ("text", r"(^|[^a-z])(text|caption|sentence|minilm|bert|token|word|clip_text|clip-text|lang|llm|tier)"),
    ("audio", r"(^|[^a-z])(audio|speech|sound|wav|clap)"),
]


def guess_modality(name: str) -> str:
    """Guess a space's modality from its name ('text', 'image', '3d', 'audio' or 'other')."""
    lowered = name.lower()
    for modality, pattern in _MODALITY_PATTERNS:
        if re.search(pattern, lowered):
            return modality
    return "other"


@dataclass(frozen=True)
class SourceFile:
    """A file a dataset was read from: the name the user knows, its sha256 and size in bytes."""

    name: str
    sha256: str
    size: int


@dataclass(eq=False)
class Space:
    """One embedding space: ``n x d`` vectors or ``n x T x d`` token sets.

    ``mask`` (bool, ``n x T``) marks the real tokens of a token set; ``weights`` (float, ``n x T``) are
    optional per-token weights. ``modality`` is one of :data:`MODALITIES`; ``source`` names the file it
    came from; ``info`` holds free-form provenance (encoder, layer, ...), JSON-safe values only. Two keys mean
    something to the library: ``primary`` (True: the dataset's main space of its modality, chosen first by
    :func:`core.retrieval.resolve_space`) and ``coordinates`` (the name of a width-3 token-set space whose first
    ``T`` points per item are where this token set's points lie).
    """

    name: str
    data: np.ndarray
    mask: np.ndarray | None = None
    weights: np.ndarray | None = None
    modality: str = "other"
    source: str | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.data.ndim not in (2, 3):
            raise DataError(f"a space must be 2-D (n x d) or 3-D (n x T x d token sets), got shape {self.data.shape}",
                            file=self.source, array=self.name,
                            hint="reshape it to one row per item")
        if self.modality not in MODALITIES:
            raise DataError(f"unknown modality {self.modality!r}; use one of {', '.join(MODALITIES)}",
                            array=self.name)
        for label, extra in (("mask", self.mask), ("weights", self.weights)):
            if extra is None:
                continue
            if self.data.ndim != 3:
                raise DataError(f"a {label} only applies to token sets (n x T x d), but the space is n x d",
                                file=self.source, array=self.name)
            if extra.shape != self.data.shape[:2]:
                raise DataError(f"{label} has shape {extra.shape}, expected {self.data.shape[:2]} (n x T)",
                                file=self.source, array=self.name)

    # -- shape ---------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """'vectors' for ``n x d``, 'tokens' for ``n x T x d``."""
        return "vectors" if self.data.ndim == 2 else "tokens"

    @property
    def n(self) -> int:
        return int(self.data.shape[0])

    @property
    def dim(self) -> int:
        return int(self.data.shape[-1])

    @property
    def n_tokens(self) -> int | None:
        return int(self.data.shape[1]) if self.data.ndim == 3 else None

    @property
    def shape_text(self) -> str:
        return " x ".join(str(s) for s in self.data.shape)

    @property
    def resident_nbytes(self) -> int:
        """Bytes held in RAM (0 for arrays memory-mapped from disk)."""
        total = 0
        for arr in (self.data, self.mask, self.weights):
            if arr is None or getattr(arr, "is_sharded", False):   # shards stay on disk
                continue
            if not isinstance(arr, np.memmap) and not _is_mmap_view(arr):
                total += arr.nbytes
        return total

    # -- values --------------------------------------------------------------------------------
    def token_mask(self) -> np.ndarray:
        """Boolean ``n x T`` mask of real tokens (all True when neither mask nor weights were given)."""
        if self.kind != "tokens":
            raise DataError("token_mask() needs a token-set space", array=self.name)
        if self.mask is not None:
            return np.asarray(self.mask).astype(bool)
        return np.ones(self.data.shape[:2], dtype=bool)

    def vectors(self, dtype=np.float32, chunk: int = 65536) -> np.ndarray:
        """The space as ``n x d`` vectors: itself, or the pooled mean of each token set (:func:`pool_token_sets`:
        ``(1/M) sum_t m_t w_t v_t`` over the ``M`` real tokens; weights may be negative)."""
        if self.kind == "vectors":
            if getattr(self.data, "is_sharded", False):   # core.shards: stays on disk, converted as read
                return self.data.astype(dtype)
            return np.asarray(self.data, dtype=dtype)
        return pool_token_sets(self.data, self.mask, self.weights, dtype=dtype, chunk=chunk)

    def take(self, rows) -> "Space":
        """The space restricted to ``rows`` (an index array or boolean mask), as an in-memory copy."""
        rows = np.asarray(rows)
        return Space(self.name, np.asarray(self.data[rows]),
                     None if self.mask is None else np.asarray(self.mask[rows]),
                     None if self.weights is None else np.asarray(self.weights[rows]),
                     self.modality, self.source, dict(self.info))


class LazySpace(Space):
    """A space whose arrays are produced on first use: by ``load(progress)``, which returns ``data`` or
    ``(data, mask, weights)`` (e.g. an encoder run whose output is kept in files and memory-mapped from there).

    Everything but the values is known up front: ``shape`` gives ``n`` and ``d`` (and ``T`` for token sets; ``None``
    where it is only known once computed), so listing, pairing and choosing spaces never computes one. Touching
    :attr:`data`, :attr:`mask` or :attr:`weights` computes it (once, thread-safe); :meth:`materialize` does the same
    with a ``progress(done, total)`` callback, e.g. from a background job. ``files`` (paths, or a callable returning
    them) are where ``load`` keeps its result: when they all exist, :attr:`ready` is True (loading only reads).
    """

    def __init__(self, name: str, load, shape: tuple, *, modality: str = "other", source: str | None = None,
                 info: dict | None = None, files=None):
        import threading

        if len(shape) not in (2, 3) or shape[0] is None or shape[-1] is None:
            raise DataError(f"a lazy space needs its shape (n, d) or (n, T, d), got {shape}", array=name)
        if modality not in MODALITIES:
            raise DataError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}", array=name)
        self.name, self.modality, self.source, self.info = name, modality, source, dict(info or {})
        self._load, self._shape, self._files = load, tuple(shape), files
        self._arrays: tuple | None = None
        self._lock = threading.Lock()

    # -- state ---------------------------------------------------------------------------------
    @property
    def materialized(self) -> bool:
        """Whether the arrays are in this object (memory or memory-mapped)."""
        return self._arrays is not None

    def files(self) -> list:
        """The files ``load`` keeps its result in (empty when it keeps none)."""
        from pathlib import Path
        files = self._files() if callable(self._files) else self._files
        return [Path(f) for f in (files or ())]

    @property
    def ready(self) -> bool:
        """True when the values are here or only need reading from :meth:`files` (no computation)."""
        files = self.files()
        return self.materialized or (bool(files) and all(f.exists() for f in files))

    def materialize(self, progress=None) -> "LazySpace":
        """Compute (or read) the arrays now; ``progress(done, total)`` is passed to the loader. Returns self."""
        with self._lock:
            if self._arrays is None:
                out = self._load(progress)
                data, mask, weights = out if isinstance(out, tuple) else (out, None, None)
                Space(self.name, data, mask, weights, self.modality, self.source)   # the same checks
                expected = self._shape
                if (data.ndim != len(expected)
                        or any(e is not None and e != a for e, a in zip(expected, data.shape))):
                    raise DataError(f"the computed space has shape {data.shape}, expected "
                                    f"{' x '.join('?' if e is None else str(e) for e in expected)}",
                                    array=self.name)
                self._arrays = (data, mask, weights)
        return self

    # -- the values (computed on first use) ----------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        return self.materialize()._arrays[0]

    @property
    def mask(self) -> np.ndarray | None:
        return self.materialize()._arrays[1]

    @property
    def weights(self) -> np.ndarray | None:
        return self.materialize()._arrays[2]

    # -- shape without computing -------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "vectors" if len(self._shape) == 2 else "tokens"

    @property
    def n(self) -> int:
        return int(self._shape[0])

    @property
    def dim(self) -> int:
        return int(self._shape[-1])

    @property
    def n_tokens(self) -> int | None:
        if self.kind == "vectors":
            return None
        return int(self._shape[1]) if self._shape[1] is not None else int(self.data.shape[1])

    @property
    def shape_text(self) -> str:
        shape = self.data.shape if self.materialized else self._shape
        return " x ".join("?" if s is None else str(s) for s in shape)

    @property
    def resident_nbytes(self) -> int:
        return super().resident_nbytes if self.materialized else 0

    def take(self, rows) -> "Space":
        """The space restricted to ``rows``: an in-memory copy when computed, else a lazy space that computes this
        one and takes the rows."""
        if self.materialized:
            return super().take(rows)
        rows = np.asarray(rows)
        n = int(rows.sum()) if rows.dtype == bool else len(rows)
        parent = self

        def load(progress=None):
            parent.materialize(progress)
            part = Space.take(parent, rows)
            return part.data, part.mask, part.weights

        return LazySpace(self.name, load, (n, *self._shape[1:]), modality=self.modality, source=self.source,
                         info=dict(self.info))

    def __repr__(self) -> str:
        state = "computed" if self.materialized else ("on disk" if self.ready else "not computed")
        return f"LazySpace({self.name!r}, {self.shape_text}, {state})"


def pool_token_sets(tokens, mask=None, weights=None, *, dtype=np.float32, chunk: int = 4096) -> np.ndarray:
    """Pooled ``n x d`` vectors of ``n x T x d`` token sets (memmap fine; read ``chunk`` items at a time, in
    float64): ``(1/M) sum_t m_t w_t v_t`` with ``M`` the number of real tokens (:func:`core.numerics.pool_tokens`,
    the one definition). ``mask`` (``n x T`` bool) defaults to all tokens, ``weights`` (``n x T``) to 1."""
    import torch

    from .numerics import pool_tokens

    n, T, d = tokens.shape
    out = np.empty((n, d), dtype=dtype)
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        x = torch.from_numpy(np.array(tokens[sl], dtype=np.float64))     # a writable float64 copy of the chunk
        m = (torch.ones(x.shape[:2], dtype=torch.float64) if mask is None
             else torch.from_numpy(np.asarray(mask[sl]).astype(np.float64)))
        w = None if weights is None else torch.from_numpy(np.array(weights[sl], dtype=np.float64))
        out[sl] = pool_tokens(x, m, w).numpy().astype(dtype)
    return out


def _is_mmap_view(arr: np.ndarray) -> bool:
    base = arr
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap):
            return True
        base = base.base
    import mmap
    return isinstance(base, mmap.mmap)


class Dataset:
    """Items table plus named spaces, rows paired by item.

    Parameters
    ----------
    items : DataFrame with an ``id`` column (unique; cast to str). ``None`` numbers the items 0..n-1.
    spaces : Space objects (or a mapping name -> Space).
    name : display name.
    origin : where it came from: 'demo', 'server', 'upload' or 'files'.
    sources : the files it was read from (name, sha256, size); they define :attr:`fingerprint`.
    """

    def __init__(self, items: pd.DataFrame | None = None,
                 spaces: Mapping[str, Space] | Iterable[Space] = (), *, name: str = "dataset",
                 origin: str = "files", sources: Iterable[SourceFile] = ()):
        space_list = list(spaces.values()) if isinstance(spaces, Mapping) else list(spaces)
        self.name = name
        self.origin = origin
        self.sources = tuple(sources)
        self.spaces: dict[str, Space] = {}
        if items is None:
            if not space_list:
                raise DataError("a dataset needs an items table or at least one space")
            items = pd.DataFrame({"id": [str(i) for i in range(space_list[0].n)]})
        self.items = _check_items(items)
        for space in space_list:
            self.add_space(space)
        self._fingerprint: str | None = None

    # -- basic facts ---------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> np.ndarray:
        return self.items["id"].to_numpy()

    @property
    def space_names(self) -> list[str]:
        """The spaces views list and compute over by default: all but those computed on demand
        (:class:`LazySpace`, see :meth:`on_demand_space_names`), which are opened by name or by kind."""
        return [k for k, s in self.spaces.items() if not isinstance(s, LazySpace)]

    def on_demand_space_names(self) -> list[str]:
        """The spaces computed on first use (:class:`LazySpace`, e.g. per-token encoder outputs)."""
        return [k for k, s in self.spaces.items() if isinstance(s, LazySpace)]

    def vector_space_names(self) -> list[str]:
        """The ``n x d`` spaces (on-demand ones included; the kind is known without computing)."""
        return [k for k, s in self.spaces.items() if s.kind == "vectors"]

    def token_space_names(self) -> list[str]:
        """The ``n x T x d`` token-set spaces (on-demand ones included)."""
        return [k for k, s in self.spaces.items() if s.kind == "tokens"]

    @property
    def resident_nbytes(self) -> int:
        return sum(s.resident_nbytes for s in self.spaces.values())

    def __getitem__(self, name: str) -> Space:
        try:
            return self.spaces[name]
        except KeyError:
            raise DataError(f"no space named '{name}'",
                            hint=f"available spaces: {', '.join(self.spaces) or '(none)'}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.spaces

    def __repr__(self) -> str:
        spaces = ", ".join(f"{k}: {s.shape_text}" for k, s in self.spaces.items())
        return f"Dataset({self.name!r}, n={self.n}, spaces=[{spaces}])"

    # -- building ------------------------------------------------------------------------------
    def add_space(self, space: Space, replace: bool = False) -> "Dataset":
        """Add ``space`` (rows must pair with the items). Returns self."""
        if space.n != self.n:
            raise DataError(f"space '{space.name}' has {space.n} rows but the dataset has {self.n} items",
                            file=space.source, array=space.name,
                            hint="every space must have one row per item, in the same order")
        if space.name in self.spaces and not replace:
            raise DataError(f"a space named '{space.name}' already exists", file=space.source,
                            array=space.name, hint="rename one of the arrays or files")
        self.spaces[space.name] = space
        self._fingerprint = None
        return self

    def subset(self, rows) -> "Dataset":
        """A new in-memory dataset with only ``rows`` (indices or boolean mask)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        items = self.items.iloc[rows].reset_index(drop=True)
        out = Dataset(items, [s.take(rows) for s in self.spaces.values()], name=self.name,
                      origin=self.origin, sources=self.sources)
        return out

    # -- item metadata -------------------------------------------------------------------------
    def groups(self, column: str | None = "group") -> np.ndarray:
        """Integer group code per item: items sharing a value of ``column`` are true partners of each other.

        Without that column (or with ``column=None``) every item is its own group (codes 0..n-1). Any metadata
        column can serve, e.g. ``"caption"`` when identical texts should count as the same item.
        """
        if column is not None and column in self.items.columns:
            codes, _ = pd.factorize(self.items[column].astype(str))
            return codes.astype(np.int64)
        if column is not None and column != "group":
            raise DataError(f"no item column named '{column}'", column=column,
                            hint=f"available: {', '.join(self.metadata_columns()) or '(none)'}")
        return np.arange(self.n, dtype=np.int64)

    def metadata_columns(self) -> list[str]:
        return [c for c in self.items.columns if c != "id"]

    def hover_text(self, max_len: int = 120) -> list[str]:
        """One short text per item for hovering: caption, else label, else id."""
        for col in ("caption", "label"):
            if col in self.items.columns:
                return [str(v)[:max_len] for v in self.items[col].fillna("").astype(str)]
        return [str(v) for v in self.items["id"]]

    # -- identity ------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """sha256 that identifies the dataset's contents: of its source files when known, else of its arrays."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            if self.sources:
                for src in sorted(self.sources, key=lambda s: s.name):
                    h.update(f"{src.name}\0{src.sha256}\0".encode())
                h.update("\0".join(self.space_names).encode())
            else:
                h.update(pd.util.hash_pandas_object(self.items.astype(str), index=False).values.tobytes())
                for name in self.space_names:       # on-demand spaces are derived: never computed here
                    space = self.spaces[name]
                    h.update(name.encode())
                    h.update(array_sha256(space.data).encode())
                    for extra in (space.mask, space.weights):
                        if extra is not None:
                            h.update(array_sha256(extra).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def space_fingerprint(self, name: str) -> str:
        """sha256 of one space's identity within this dataset (dataset fingerprint + space name)."""
        return hashlib.sha256(f"{self.fingerprint}\0{name}".encode()).hexdigest()


def array_sha256(arr: np.ndarray, chunk_rows: int = 1 << 16) -> str:
    """sha256 of an array's dtype, shape and bytes (read in row chunks, so memmaps stay cheap)."""
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    if arr.ndim == 0 or arr.shape[0] == 0:
        h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()
    for start in range(0, arr.shape[0], chunk_rows):
        h.update(np.ascontiguousarray(arr[start:start + chunk_rows]).tobytes())
    return h.hexdigest()


def _check_items(items: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(items, pd.DataFrame):
        raise DataError("the items table must be a pandas DataFrame")
    if "id" not in items.columns:
        raise DataError("the items table has no 'id' column", column="id",
                        hint="add a column named 'id' with one unique identifier per item")
    items = items.reset_index(drop=True).copy()
    if items["id"].isna().any():
        row = int(np.flatnonzero(items["id"].isna().to_numpy())[0])
        raise DataError("an item has an empty id", column="id", row=row, hint="give every item an id")
    items["id"] = items["id"].astype(str)
    dup = items["id"].duplicated(keep=False)
    if dup.any():
        rows = np.flatnonzero(dup.to_numpy())
        first = items["id"].iloc[rows[0]]
        raise DataError(f"{int(dup.sum())} rows share an id (e.g. '{first}' at rows "
                        f"{', '.join(str(r) for r in rows[:5])})", column="id", row=int(rows[0]),
                        hint="ids must be unique; use a 'group' column for items that belong together")
    return items
