"""The difference between two versions, computed from their two states or from the deltas between them.

Pure functions on Arrow tables; consumer/timeline.py reads the tables. Both
ways compare a key's record at the two versions by its row digest
(format/checksum.py): a null field counts as no field (a column added later
is null in older rows), and values compare with their types (1 and 1.0
differ, as they do in the format). So both ways give the same answer:

- From the states: the two whole tables, sorted by key, are joined on the key.
- From the deltas between versions lo < hi: a key's record at hi is in the
  last forward delta that touches it, its record at lo in the first reverse
  delta that touches it (a reverse delta holds the rows its version replaced).
  A key changed and changed back, or added and removed again, is no change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from combe.format.checksum import row_digests
from combe.format.delta import ADDED, OP_COLUMN, OP_NAMES, REMOVED, UPDATED, touched
from combe.format.schema import Schema, conform

from .rows import Record, python_values


@dataclass(frozen=True)
class Change:
    """One key that differs between two versions: ``before`` at the first, ``after`` at the second (None: absent)."""

    key: Any
    op: str  # "added", "updated" or "removed"
    before: Record | None
    after: Record | None


class Diff:
    """Keys added, updated and removed from ``from_version`` to ``to_version``, sorted by key.

    ``method`` says how it was computed: ``"deltas"`` (the deltas between the
    versions) or ``"states"`` (both versions loaded whole); ``bytes_read`` is
    what the blobs read for it weigh. Iterate for every Change, or take
    ``page(offset, limit)``; records are built only for the changes asked for.
    """

    def __init__(self, dataset: str, from_version: int, to_version: int, keys: pa.Array, ops: np.ndarray,
                 before: tuple[pa.Table, np.ndarray, Schema], after: tuple[pa.Table, np.ndarray, Schema],
                 *, method: str, bytes_read: int) -> None:
        self.dataset = dataset
        self.from_version = from_version
        self.to_version = to_version
        self.keys = keys
        self.ops = ops
        self._before = before  # (rows, row of each change or -1, the from-version's schema)
        self._after = after
        self.method = method
        self.bytes_read = bytes_read

    @property
    def counts(self) -> dict[str, int]:
        found = np.bincount(self.ops, minlength=REMOVED + 1)
        return {name: int(found[op]) for op, name in OP_NAMES.items()}

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Change]:
        for offset in range(0, len(self), 1024):
            yield from self.page(offset, 1024)

    def page(self, offset: int, limit: int) -> list[Change]:
        """The changes ``offset`` to ``offset + limit`` in key order."""
        end = min(len(self), offset + limit)
        if offset >= end:
            return []
        keys = self.keys.slice(offset, end - offset).to_pylist()
        befores = _records_at(*self._before, slice(offset, end))
        afters = _records_at(*self._after, slice(offset, end))
        ops = self.ops[offset:end].tolist()
        return [Change(key, OP_NAMES[op], before, after) for key, op, before, after in zip(keys, ops, befores, afters)]

    def reversed(self) -> Diff:
        """The same difference seen from ``to_version`` back to ``from_version``."""
        ops = np.where(self.ops == ADDED, REMOVED, np.where(self.ops == REMOVED, ADDED, self.ops)).astype(np.int8)
        return Diff(self.dataset, self.to_version, self.from_version, self.keys, ops, self._after, self._before,
                    method=self.method, bytes_read=self.bytes_read)

    def __repr__(self) -> str:
        counts = self.counts
        return (f"<Diff {self.dataset} {self.from_version} -> {self.to_version}: +{counts['added']} "
                f"~{counts['updated']} -{counts['removed']} from the {self.method}>")


def records(table: pa.Table, schema: Schema) -> list[Record]:
    """Rows as records the way ``get`` returns them: JSON columns parsed, nested values as lists and dicts
    (maps too), the schema's column order."""
    names = [schema.key_field, *schema.columns]
    columns = [python_values(table.column(name).combine_chunks(), kind)
               for name, kind in zip(names, [schema.key_stored, *schema.columns.values()])]
    return [dict(zip(names, values)) for values in zip(*columns)]


def _records_at(table: pa.Table, rows: np.ndarray, schema: Schema, part: slice) -> list[Record | None]:
    wanted = rows[part]
    present = np.flatnonzero(wanted >= 0)
    out: list[Record | None] = [None] * len(wanted)
    if len(present):
        found = records(table.take(pa.array(wanted[present], pa.int64())), schema)
        for i, record in zip(present.tolist(), found):
            out[i] = record
    return out


def _sorted_by_key(keys: pa.Array, ops: np.ndarray, before: np.ndarray, after: np.ndarray
                   ) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
    order = pc.sort_indices(keys).to_numpy()
    return keys.take(pa.array(order)), ops[order], before[order], after[order]


def _ops(before_present: np.ndarray, after_present: np.ndarray, same: np.ndarray) -> np.ndarray:
    """ADDED, REMOVED, UPDATED, or 0 where the key is no change at all."""
    ops = np.zeros(len(before_present), np.int8)
    ops[~before_present & after_present] = ADDED
    ops[before_present & ~after_present] = REMOVED
    ops[before_present & after_present & ~same] = UPDATED
    return ops


def from_states(dataset: str, versions: tuple[int, int], before: pa.Table, after: pa.Table,
                schemas: tuple[Schema, Schema], bytes_read: int) -> Diff:
    """The difference between two whole states (tables sorted by key, as a View's ``table``)."""
    key = schemas[1].key_field
    old_keys, new_keys = before.column(key).combine_chunks(), after.column(key).combine_chunks()
    in_new = pc.is_in(old_keys, value_set=new_keys).to_numpy(zero_copy_only=False)
    in_old = pc.is_in(new_keys, value_set=old_keys).to_numpy(zero_copy_only=False)
    old_common, new_common = np.flatnonzero(in_new), np.flatnonzero(in_old)
    # Both tables are sorted by key, so the rows of the keys they share line up one to one.
    same = np.ones(0, bool) if not len(old_common) else (
        row_digests(before.take(pa.array(old_common))) == row_digests(after.take(pa.array(new_common))))
    changed = ~same
    removed, added = np.flatnonzero(~in_new), np.flatnonzero(~in_old)
    none_old, none_new = np.full(len(added), -1), np.full(len(removed), -1)
    keys = pa.concat_arrays([old_keys.take(pa.array(removed, pa.int64())),
                             new_keys.take(pa.array(added, pa.int64())),
                             new_keys.take(pa.array(new_common[changed], pa.int64()))])
    ops = np.concatenate([np.full(len(removed), REMOVED, np.int8), np.full(len(added), ADDED, np.int8),
                          np.full(int(changed.sum()), UPDATED, np.int8)])
    old_rows = np.concatenate([removed, none_old, old_common[changed]]).astype(np.int64)
    new_rows = np.concatenate([none_new, added, new_common[changed]]).astype(np.int64)
    keys, ops, old_rows, new_rows = _sorted_by_key(keys, ops, old_rows, new_rows)
    return Diff(dataset, versions[0], versions[1], keys, ops, (before, old_rows, schemas[0]),
                (after, new_rows, schemas[1]), method="states", bytes_read=bytes_read)


def from_deltas(dataset: str, versions: tuple[int, int], forward: Sequence[pa.Table], reverse: Sequence[pa.Table],
                schemas: tuple[Schema, Schema], bytes_read: int) -> Diff:
    """The difference from version lo to hi (lo < hi) from the forward and reverse deltas of lo+1 .. hi, in order.

    ``schemas`` are lo's and hi's. Between them no column changed type (a
    version that retypes one has no deltas); columns only appear.
    """
    low, high = schemas
    key = high.key_field
    forward_rows, _, last = touched(forward, high)
    reverse_rows, first, _ = touched(reverse, high)
    keys = forward_rows.column(key).take(pa.array(last))
    # A reverse delta touches the keys its forward delta touches: find each key's first reverse row.
    first_by_key = pc.index_in(keys, value_set=reverse_rows.column(key).take(pa.array(first)))
    before_at = first[first_by_key.to_numpy(zero_copy_only=False)]
    after = forward_rows.take(pa.array(last))
    # What a reverse delta holds of a column added after lo is null for a key first touched then: lo's columns.
    taken = reverse_rows.take(pa.array(before_at))
    before = conform(taken, low).append_column(OP_COLUMN, taken.column(OP_COLUMN))
    after_present = after.column(OP_COLUMN).to_numpy() != REMOVED
    before_present = before.column(OP_COLUMN).to_numpy() != REMOVED
    same = row_digests(before) == row_digests(after)  # the op columns are reserved: not part of a row
    ops = _ops(before_present, after_present, same)
    kept = np.flatnonzero(ops)
    rows = np.arange(len(ops), dtype=np.int64)
    old_rows = np.where(before_present, rows, -1)[kept]
    new_rows = np.where(after_present, rows, -1)[kept]
    sorted_keys, sorted_ops, old_rows, new_rows = _sorted_by_key(keys.take(pa.array(kept, pa.int64())), ops[kept],
                                                                 old_rows, new_rows)
    return Diff(dataset, versions[0], versions[1], sorted_keys, sorted_ops, (before, old_rows, low),
                (after, new_rows, high), method="deltas", bytes_read=bytes_read)
