"""Secondary indexes: equality on one or more columns (hash, non-unique) and ranges in column order.

An index has two layers. ``BaseIndex`` covers a snapshot's rows and is built
once per Base, with numpy and Arrow kernels (no per-record Python): each
row's value hash, rows sorted by that hash (4 bytes a row) beside the sorted
hashes (4 bytes a row), found by binary search; for ranges, rows sorted by
value (4 bytes a row), built on the first ``range()``. ``Index`` is a View's
index: the BaseIndex, with the rows the View's overlay replaced left out,
plus a small dict over the overlay. Every View on the same Base shares the
BaseIndex, so after a delta only the overlay is indexed, never the snapshot.

Hashes are CRC-32 of a value's canonical bytes (as for keys, format/index.py),
combined across the fields of a compound index; equal hashes are then
checked against the values, so collisions cost time, never correctness.
"""

from __future__ import annotations

import bisect
import struct
import zlib
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from combe.format.checksum import value_hashes
from combe.format.errors import ConfigError, KeyTypeError
from combe.format.index import hash_keys
from combe.format.jsontext import json_text, loads_stored
from combe.format.schema import Schema

from .compare import Nested, freeze, scalar
from .compare import lookup as nested_lookup
from .nested import is_nested
from .rows import Record, compile_function, value_source

if TYPE_CHECKING:
    from .base import Base
    from .view import View

Fields = tuple[str, ...]

# Candidates up to this many are checked one by one in Python; more, columnwise with Arrow.
SMALL_MATCH = 64
_TRUE, _FALSE = zlib.crc32(b"\x01"), zlib.crc32(b"\x00")
_MULTIPLIER = 16777619
_UNSORTABLE = ("json", "binary", "null")


def field_kinds(schema: Schema, fields: Fields) -> list[str]:
    """The types of ``fields`` in ``schema`` (the key field included)."""
    kinds = {schema.key_field: schema.key_stored, **schema.columns}
    return [kinds[f] for f in fields]


def normalize_fields(fields: str | Sequence[str]) -> Fields:
    names = (fields,) if isinstance(fields, str) else tuple(fields)
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"index fields {fields!r}: give a column name or a tuple of distinct names")
    return names


def _normalize_value(value: Any, kind: str, field: str) -> Any:
    """A lookup value in the form the index compares: floats for float columns, JSON as canonical text,
    nested values frozen (compare.py)."""
    if value is None:
        return None
    if kind == "json":
        return json_text(value)
    if is_nested(kind):
        return nested_lookup(value, kind, field)
    checked = scalar(value, kind, f"column {field!r}")
    return checked + 0.0 if kind == "float64" else checked  # + 0.0: -0.0 == 0.0 by bytes


def _value_hash(value: Any, kind: str) -> int:
    """CRC-32 of one normalized value's canonical bytes (what ``_column_hashes`` gives for it)."""
    if value is None or kind == "null":
        return 0  # a null column holds no value: a non-null lookup finds nothing once checked
    if isinstance(value, Nested):
        return value.hash
    if kind == "bool":
        return _TRUE if value else _FALSE
    if kind == "int64":
        return zlib.crc32(value.to_bytes(8, "little", signed=True))
    if kind == "float64":
        return zlib.crc32(struct.pack("<d", value))
    return zlib.crc32(value if isinstance(value, bytes) else value.encode())


def _column_hashes(array: pa.Array, kind: str) -> np.ndarray:
    """Every row's value hash (0 for nulls), hashing each distinct value once."""
    if kind == "null" or array.null_count == len(array):
        return np.zeros(len(array), np.uint64)
    if is_nested(kind):
        hashes, valid = value_hashes(array, kind)
        return np.where(valid, hashes & np.uint64(0xFFFFFFFF), np.uint64(0))
    encoded = pc.dictionary_encode(array)
    values = encoded.dictionary
    if kind == "bool":
        distinct = np.where(values.to_numpy(zero_copy_only=False), _TRUE, _FALSE).astype(np.uint64)
    elif kind == "float64":
        bits = (values.to_numpy() + 0.0).view(np.int64)
        distinct = hash_keys(pa.array(bits), "int64").astype(np.uint64)
    else:
        distinct = hash_keys(values, "int64" if kind == "int64" else "string").astype(np.uint64)
    codes = encoded.indices.fill_null(len(values)).to_numpy()
    return np.append(distinct, np.uint64(0))[codes]


def _combine(hashes: list[int] | list[np.ndarray]) -> Any:
    combined = hashes[0]
    for more in hashes[1:]:
        combined = ((combined * _MULTIPLIER) ^ more) & 0xFFFFFFFF
    return combined


def _canonical_json(array: pa.Array) -> pa.Array:
    """A json column's texts in the canonical form lookups are written in (docs/FORMAT.md, "Canonical JSON
    text"): text written before that form spelled some numbers otherwise. Each distinct text once."""
    encoded = pc.dictionary_encode(array)
    texts = [None if text is None else json_text(loads_stored(text)) for text in encoded.dictionary.to_pylist()]
    return pa.array(texts, pa.string()).take(encoded.indices)


class BaseIndex:
    """An index over one snapshot's rows, shared by every View on that snapshot.

    It reads the snapshot by the snapshot's own column types (a column all
    null when it was written is Arrow null; a column the snapshot lacks is
    null), while lookups come in the types of each View's version: those
    only differ by growth (docs/FORMAT.md, "Schema evolution"), under which
    compared forms and hashes stay the same.
    """

    def __init__(self, base: Base, fields: Fields) -> None:
        self.fields = fields
        # JSON is compared as its canonical text, which is what the column stores.
        self.kinds = ["string" if k == "json" else k for k in (base.kinds.get(f, "null") for f in fields)]
        # No reference to the Base itself: it holds this index, and a cycle would keep a replaced
        # snapshot in memory until the garbage collector happened to run.
        self.count, self.key_field = base.count, base.key_field
        self.arrays = [_canonical_json(array) if array is not None and base.kinds.get(f) == "json" else array
                       for f, array in ((f, base.arrays.get(f)) for f in fields)]
        env: dict[str, Any] = {}
        sources = [value_source(i, array, kind, env) for i, (array, kind) in enumerate(zip(self.arrays, self.kinds))]
        exprs = [expr for _, expr in sources]
        for i, kind in enumerate(self.kinds):
            if is_nested(kind):
                env[f"_freeze{i}"] = lambda value, type_=kind: None if value is None else Nested(freeze(value, type_))
                exprs[i] = f"_freeze{i}({exprs[i]})"
        body = [load for loads, _ in sources for load in loads] + [f"return ({', '.join(exprs)},)"]
        self.values_at: Callable[[int], tuple[Any, ...]] = compile_function(
            "def values_at(r):\n" + "".join(f"    {line}\n" for line in body), "values_at", env)
        count = base.count
        hashes = _combine([np.zeros(count, np.uint64) if array is None else _column_hashes(array, kind)
                           for array, kind in zip(self.arrays, self.kinds)]) if count else np.zeros(0, np.uint64)
        order = np.argsort(hashes, kind="stable")
        self.rows = order.astype(np.int32)
        self.hashes = hashes[order].astype(np.uint32)
        self._hash_view = memoryview(self.hashes)  # type: ignore[arg-type]
        self._order: range | np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays (the value order too, once a range() built it), for metrics."""
        order = self._order
        return int(self.rows.nbytes + self.hashes.nbytes + (order.nbytes if isinstance(order, np.ndarray) else 0))

    def normalize(self, value: Any, kinds: Sequence[str]) -> tuple[Any, ...]:
        """The lookup value as a tuple in compared form, for fields of ``kinds``; a compound index takes a tuple."""
        values = (value,) if len(self.fields) == 1 else value
        if not isinstance(values, tuple) or len(values) != len(self.fields):
            raise KeyTypeError(f"the index on {self.fields} takes a tuple of {len(self.fields)} values, not {value!r}")
        return tuple(_normalize_value(v, kind, f) for v, kind, f in zip(values, kinds, self.fields))

    def values_of(self, record: Record, kinds: Sequence[str]) -> tuple[Any, ...]:
        """A record's values on the indexed fields (of ``kinds``), in compared form."""
        return tuple(_normalize_value(record.get(f), kind, f) for f, kind in zip(self.fields, kinds))

    def rows_equal(self, values: tuple[Any, ...]) -> np.ndarray:
        """Rows whose fields equal ``values`` (normalized), in row order."""
        wanted = _combine([_value_hash(v, kind) for v, kind in zip(values, self.kinds)])
        low = bisect.bisect_left(self._hash_view, wanted)
        high = bisect.bisect_right(self._hash_view, wanted, low)
        candidates = self.rows[low:high]
        if len(candidates) <= SMALL_MATCH or any(map(is_nested, self.kinds)):  # Arrow compares no nested values
            values_at = self.values_at
            return np.array([r for r in candidates.tolist() if values_at(r) == values], np.int64)
        taken = pa.array(candidates)
        match: Any = None
        for array, value in zip(self.arrays, values):
            column = pa.nulls(len(candidates)) if array is None else array.take(taken)
            same = pc.is_null(column) if value is None else pc.fill_null(pc.equal(column, value), False)
            match = same if match is None else pc.and_(match, same)
        return candidates[match.to_numpy(zero_copy_only=False)].astype(np.int64)

    def span(self, low: tuple[Any, ...] | None, high: tuple[Any, ...] | None) -> tuple[int, int]:
        """Where rows with ``low <= fields < high`` (tuples compare in field order) lie in ``value_order()``.

        Two binary searches, whatever the range holds; nulls are never in it.
        """
        order = self.value_order()
        start = 0 if low is None else bisect.bisect_left(order, low, key=self.values_at)
        stop = len(order) if high is None else bisect.bisect_left(order, high, key=self.values_at)
        return start, max(start, stop)

    def value_order(self) -> range | np.ndarray:
        """Row numbers in value order (ties in row order), without rows holding a null; built on first use.

        Index.range refuses the fields that cannot be ordered before it asks.
        """
        if self._order is not None:
            return self._order
        if self.fields == (self.key_field,):
            self._order = identity = range(self.count)  # the snapshot is sorted by key already
            return identity
        present = [(f, a) for f, a in zip(self.fields, self.arrays) if a is not None]
        if len(present) < len(self.fields) or not self.count:
            self._order = empty = np.zeros(0, np.int32)  # a column this snapshot lacks is all null
            return empty
        table = pa.table({f: a for f, a in present})
        order = pc.sort_indices(table, sort_keys=[(f, "ascending") for f in self.fields]).to_numpy()
        valid = np.ones(self.count, bool)
        for _, array in present:
            if array.null_count:
                valid &= array.is_valid().to_numpy(zero_copy_only=False)
        self._order = sorted_rows = order[valid[order]].astype(np.int32)
        return sorted_rows


def base_index(base: Base, fields: Fields) -> BaseIndex:
    """The BaseIndex on ``fields``, built once per Base and shared by its Views."""
    with base.index_lock:
        found = base.indexes.get(fields)
        if found is None:
            found = base.indexes[fields] = BaseIndex(base, fields)
        return found


def _page(rows: range | np.ndarray, dead: np.ndarray, extras: int, position: Callable[[int], int],
          extra: Callable[[int], Record], offset: int, limit: int | None,
          records_at: Callable[[np.ndarray], list[Record]]) -> list[Record]:
    """Records ``offset`` to ``offset + limit`` of ``rows`` (base rows, in order) merged with ``extras`` records.

    ``dead``: sorted positions in ``rows`` to leave out (rows the overlay
    replaced). Extra ``j`` (in order) is ``extra(j)`` and comes just before
    ``rows[position(j)]``. Only the page's records are built, and only the
    extras near the page are placed (by binary search), so the cost is the
    page's plus a few binary searches, however many rows and extras there are.
    """
    gaps = dead - np.arange(len(dead))  # for each dead position, how many kept rows come before it

    def slot(j: int) -> int:  # extra j's place in the merged list: kept rows before it, plus the extras before it
        before = position(j)
        return before - int(np.searchsorted(dead, before)) + j

    total = len(rows) - len(dead) + extras
    end = total if limit is None else min(total, offset + limit)
    if offset >= end:
        return []
    first = bisect.bisect_left(range(extras), offset, key=slot)
    last = bisect.bisect_left(range(extras), end, first, key=slot)
    inserted = {slot(j): extra(j) for j in range(first, last)}
    kept = np.arange(offset - first, offset - first + (end - offset) - len(inserted))  # among the kept rows
    at = kept + np.searchsorted(gaps, kept, side="right")  # their positions in ``rows``
    taken = at + rows.start if isinstance(rows, range) else rows[at]  # a range here is always step 1
    built = iter(records_at(np.asarray(taken, np.int64)))
    return [dict(inserted[slot]) if slot in inserted else next(built) for slot in range(offset, end)]


class OverlayPart:
    """A View's own part of an index: its overlay's records by value, and the base rows the overlay replaced.

    Built once per View and fields (``View.index`` keeps it), with the
    View's types of the fields (``kinds``). It holds no reference to the
    View, which holds it.
    """

    def __init__(self, overlay: dict[Any, Record | None], base: BaseIndex, replaced: np.ndarray,
                 kinds: Sequence[str]) -> None:
        self.kinds = list(kinds)
        self.by_value: dict[tuple[Any, ...], list[Any]] = {}
        for key, record in overlay.items():
            if record is not None:
                self.by_value.setdefault(base.values_of(record, kinds), []).append(key)
        self.replaced = replaced  # sorted base rows whose keys the overlay changed or removed
        self._dead: np.ndarray | None = None
        self._in_order: list[tuple[tuple[Any, ...], Any]] | None = None

    def in_order(self) -> list[tuple[tuple[Any, ...], Any]]:
        """(values, key) of the overlay's records without a null field, in value order; made on first use."""
        if self._in_order is None:
            self._in_order = sorted(((values, key) for values, keys in self.by_value.items() if None not in values
                                     for key in keys), key=itemgetter(0))
        return self._in_order

    def dead_in_order(self, base: BaseIndex) -> np.ndarray:
        """Positions in ``base.value_order()`` of the replaced rows, sorted; one pass on first use, then kept.

        Racing threads may both compute it: the results are equal, and the assignment is atomic.
        """
        if self._dead is None:
            order = base.value_order()
            self._dead = self.replaced if isinstance(order, range) else np.flatnonzero(np.isin(order, self.replaced))
        return self._dead


class Index:
    """A View's index on ``fields``: ``get(value)`` and ``range(lo, hi)`` return records (dicts).

    Results come in key order from ``get`` and in field order from ``range``.
    """

    def __init__(self, view: View, base: BaseIndex, overlay: OverlayPart) -> None:
        self.fields = base.fields
        self.view = view
        self.base = base
        self._overlay = overlay

    def values_of(self, record: Record) -> tuple[Any, ...]:
        """A record's values on the indexed fields in compared form (the order ``range`` returns records in)."""
        return self.base.values_of(record, self._overlay.kinds)

    def get(self, value: Any, *, offset: int = 0, limit: int | None = None) -> list[Record]:
        """The records whose indexed field (or tuple of fields) equals ``value``, in key order; [] if none.

        ``offset`` and ``limit`` take one page of them: only that page's records are built.
        """
        values = self.base.normalize(value, self._overlay.kinds)
        rows = self.base.rows_equal(values)  # in row order, which is key order
        replaced = self._overlay.replaced
        at = np.searchsorted(rows, replaced)
        inside = at < len(rows)
        inside[inside] = rows[at[inside]] == replaced[inside]
        dead = at[inside]
        overlay, keys = self.view.overlay, self.view.base.keys
        extras = sorted(self._overlay.by_value.get(values, ()))

        def position(j: int) -> int:
            return bisect.bisect_right(rows, extras[j], key=lambda row: keys[row].as_py())

        return _page(rows, dead, len(extras), position, lambda j: overlay[extras[j]],  # type: ignore[arg-type,return-value]
                     offset, limit, self.view.records_at)

    def range(self, lo: Any = None, hi: Any = None, *, offset: int = 0, limit: int | None = None) -> list[Record]:
        """Records with ``lo <= value < hi`` (None: unbounded), in value order; nulls never match.

        ``offset`` and ``limit`` take one page of them: finding it costs a few
        binary searches, and only its records are built, so ``range(limit=10)``
        costs about ten lookups however many records match.
        """
        kinds = self._overlay.kinds
        unsortable = [f"{f!r} ({kind})" for f, kind in zip(self.fields, kinds)
                      if kind in _UNSORTABLE or is_nested(kind)]
        if unsortable:
            raise ConfigError(f"range() needs columns that can be ordered; {', '.join(unsortable)} cannot be: "
                              "get() finds equal values")
        low = None if lo is None else self.base.normalize(lo, kinds)
        high = None if hi is None else self.base.normalize(hi, kinds)
        start, stop = self.base.span(low, high)
        rows = self.base.value_order()[start:stop]
        dead: np.ndarray = np.zeros(0, np.int64)
        if self.view.overlay:
            all_dead = self._overlay.dead_in_order(self.base)
            dead = all_dead[np.searchsorted(all_dead, start):np.searchsorted(all_dead, stop)] - start
        every = self._overlay.in_order()
        first = 0 if low is None else bisect.bisect_left(every, low, key=itemgetter(0))
        last = len(every) if high is None else bisect.bisect_left(every, high, first, key=itemgetter(0))
        values_at, overlay = self.base.values_at, self.view.overlay

        def position(j: int) -> int:
            return bisect.bisect_right(rows, every[first + j][0], key=values_at)

        return _page(rows, dead, max(0, last - first), position,
                     lambda j: overlay[every[first + j][1]], offset, limit, self.view.records_at)  # type: ignore[arg-type,return-value]

    def __repr__(self) -> str:
        return f"<Index {self.fields} of {self.view!r}>"
