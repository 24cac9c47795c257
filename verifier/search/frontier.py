r"""The frontier of a branch-and-bound search: the open sub-domains, stored as one batch.

Both searches of this package keep their open sub-domains here:

* input splitting (:mod:`verifier.search.input_split`): a sub-domain is an input box ``[l, u]`` with
  the alternatives still possible on it, its score and split preferences;
* ReLU splitting (:mod:`verifier.search.relu_split`): a sub-domain is the box with some neurons fixed
  active or inactive, with its multipliers (α, β), intermediate bounds and lower bound.

A :class:`Batch` holds ``N`` sub-domains as *named numpy fields of equal leading length* ``N`` (field
``f`` has shape ``(N, …)``); row ``i`` of every field describes sub-domain ``i``.  Batches are what the
bounding code consumes and produces (one vectorised call per batch), so the frontier stores one batch and
never a Python list of sub-domains.

:class:`Frontier` is the store:

* :meth:`Frontier.push` appends a batch (rows keep their order: the open rows first, then the new ones);
* :meth:`Frontier.pop` removes and returns the ``k`` rows with the *lowest* priority (e.g. the worst
  lower bound first — the sub-domains most likely to hold a violation, whose bounds are also the ones
  that keep the search from concluding); the rows left keep their relative order;
* :meth:`Frontier.pop_at` removes given rows (a search with its own selection rule picks the indices);
* ``len``, :attr:`Frontier.nbytes` (bytes of the stored arrays) and :attr:`Frontier.over_cap` (more
  rows than ``max_rows`` or more bytes than ``max_bytes``) for a memory cap.

Order is part of the contract: a search's exploration order (and hence its statistics and, under a time
limit, its verdict) depends on which rows :meth:`Frontier.pop` selects, including among equal
priorities.  ``pop(k, p, ordered=True)`` selects ``np.argsort(p)[:k]`` (returned in ascending
priority); ``ordered=False`` selects ``np.argpartition(p, k)[:k]`` (any order, linear time) and all rows
when ``k ≥ len``.  The frontier never changes what is stored: soundness (the open and the closed
sub-domains cover the search space) is the searches' business.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Generic, TypeVar

import numpy as np

__all__ = ["Batch", "Frontier", "lowest"]

B = TypeVar("B", bound="Batch")


class Batch:
    """``N`` sub-domains as named numpy arrays of equal leading length ``N``.

    Fields are read as ``batch["name"]`` (subclasses add typed properties).  Arrays are shared, not
    copied: a caller may update rows in place (``batch["vmin"][idx] = …``); :meth:`take` and
    :meth:`cat` return new arrays.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, np.ndarray]) -> None:
        arrays = {name: np.asarray(a) for name, a in fields.items()}
        if not arrays:
            raise ValueError("a batch needs at least one field")
        lengths = {name: (a.shape[0] if a.ndim else -1) for name, a in arrays.items()}
        if len(set(lengths.values())) != 1 or -1 in lengths.values():
            raise ValueError(f"batch fields must share their leading length, got {lengths}")
        self._fields = arrays

    # ---- access ----------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        return self._fields[name]

    def __len__(self) -> int:
        return int(next(iter(self._fields.values())).shape[0])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._fields)

    @property
    def fields(self) -> Mapping[str, np.ndarray]:
        """The arrays by name (a new dict; the arrays themselves are shared)."""
        return dict(self._fields)

    @property
    def nbytes(self) -> int:
        """Bytes of all stored arrays."""
        return int(sum(a.nbytes for a in self._fields.values()))

    @property
    def row_nbytes(self) -> int:
        """Bytes per sub-domain (from the fields' shapes and dtypes; valid for an empty batch too)."""
        return int(sum(a.dtype.itemsize * int(np.prod(a.shape[1:])) for a in self._fields.values()))

    # ---- new batches ----------------------------------------------------------------------------
    def _like(self: B, fields: Mapping[str, np.ndarray]) -> B:
        out = object.__new__(type(self))
        Batch.__init__(out, fields)
        return out

    def take(self: B, idx: np.ndarray | Sequence[int]) -> B:
        """Rows ``idx`` (integer indices or a boolean mask), in that order, as a new batch."""
        return self._like({name: a[idx] for name, a in self._fields.items()})

    def empty_like(self: B) -> B:
        """A batch with the same fields (trailing shapes, dtypes) and no rows."""
        return self._like({name: a[:0] for name, a in self._fields.items()})

    @classmethod
    def cat(cls: type[B], parts: Iterable[B]) -> B:
        """Rows of ``parts`` one after the other (all parts have the same fields)."""
        parts = list(parts)
        if not parts:
            raise ValueError("Batch.cat needs at least one part")
        names = parts[0].names
        for p in parts[1:]:
            if p.names != names:
                raise ValueError(f"Batch.cat: fields differ ({p.names} vs {names})")
        if len(parts) == 1:
            return parts[0]
        return parts[0]._like({n: np.concatenate([p[n] for p in parts]) for n in names})


def lowest(priority: np.ndarray, k: int, ordered: bool = True) -> np.ndarray:
    """Indices of the ``k`` lowest entries of ``priority``.

    ``ordered``: ``np.argsort(priority)[:k]`` (ascending priority).  Otherwise
    ``np.argpartition(priority, k)[:k]`` in no particular order, and ``arange(N)`` when ``k ≥ N``.
    """
    n = int(priority.shape[0])
    k = max(0, int(k))
    if ordered:
        return np.argsort(priority)[:k]
    if k >= n:
        return np.arange(n)
    return np.argpartition(priority, k)[:k]


class Frontier(Generic[B]):
    """The open sub-domains of a search (module docstring).

    Parameters
    ----------
    empty
        A batch with the fields of a sub-domain and no rows (it fixes the schema).
    max_rows, max_bytes
        The cap: :attr:`over_cap` is true once more rows or more bytes than these are stored
        (``None``: no cap).  The frontier does not refuse a push; the search decides what to do.
    """

    def __init__(self, empty: B, max_rows: int | None = None, max_bytes: float | None = None) -> None:
        if len(empty):
            empty = empty.empty_like()
        self._rows: B = empty
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.peak = 0  # most rows held at once

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> B:
        """The open sub-domains, in store order (shared arrays: do not resize)."""
        return self._rows

    @property
    def nbytes(self) -> int:
        return self._rows.nbytes

    @property
    def row_nbytes(self) -> int:
        return self._rows.row_nbytes

    @property
    def over_cap(self) -> bool:
        """More rows than ``max_rows`` or more bytes than ``max_bytes`` are stored."""
        return (self.max_rows is not None and len(self) > self.max_rows) or (
            self.max_bytes is not None and self.nbytes > self.max_bytes
        )

    def push(self, batch: B) -> None:
        """Append the rows of ``batch`` after the open ones (into an empty frontier the batch's arrays are
        kept as they are, not copied: do not modify them afterwards)."""
        if len(batch):
            self._rows = self._rows.cat([self._rows, batch]) if len(self._rows) else batch
        self.peak = max(self.peak, len(self))

    def pop_at(self, idx: np.ndarray) -> B:
        """Remove rows ``idx`` (integer indices, no repeats) and return them in that order; the rows
        left keep their relative order."""
        idx = np.asarray(idx, dtype=np.intp)
        n = len(self)
        if idx.size == n and n and np.array_equal(idx, np.arange(n)):
            out, self._rows = self._rows, self._rows.empty_like()
            return out
        keep = np.ones(n, dtype=bool)
        keep[idx] = False
        out = self._rows.take(idx)
        self._rows = self._rows.take(np.flatnonzero(keep))
        return out

    def pop(self, k: int, priority: str | np.ndarray, ordered: bool = True) -> B:
        """Remove and return the ``k`` rows of lowest ``priority`` (a field name or an array over the
        open rows); see :func:`lowest` for ``ordered``."""
        p = self._rows[priority] if isinstance(priority, str) else np.asarray(priority)
        if p.shape[:1] != (len(self),):
            raise ValueError(f"priority has shape {p.shape}, the frontier holds {len(self)} rows")
        return self.pop_at(lowest(p, k, ordered))

    def clear(self) -> None:
        """Drop every open row (frees their memory)."""
        self._rows = self._rows.empty_like()
