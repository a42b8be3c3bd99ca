"""Refresh listeners: what changed between two Views, and telling the callbacks.

When the new View was reached by deltas, only the keys those deltas touched
(and, when the loader went back to the base snapshot, the keys the old
overlay held) can differ, so just those are compared, record by record:
a key changed by one delta and changed back by the next is no change at all.
When a snapshot was loaded, the two versions are compared whole, columnwise
with Arrow kernels (nested values, which Arrow cannot compare, by the value
hashes of the state checksum). Either way the change set is the real
difference between the two versions as this consumer sees them (its
``columns``, if projected).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from combe.format.checksum import value_hashes
from combe.format.schema import Schema, conform, conform_record

from .nested import is_nested
from .view import View

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Update:
    """One refresh as a listener sees it: the versions and the keys added, updated and removed."""

    dataset: str
    from_version: int
    to_version: int
    added: frozenset[Any]
    updated: frozenset[Any]
    removed: frozenset[Any]

    def __len__(self) -> int:
        return len(self.added) + len(self.updated) + len(self.removed)


Listener = Callable[[Update], object]


def changes(old: View, new: View, touched: list[pa.Array] | None) -> Update:
    """The difference between ``old`` and ``new``; ``touched`` as the loader reported it."""
    # Records are compared in the newer version's schema, which holds the older one (docs/FORMAT.md, "Schema
    # evolution"): a column or struct field appended since, null in the older record, is no change.
    wide = new.schema if new.version > old.version else old.schema
    if touched is None:
        added, updated, removed = _diff_tables(old, new, wide)
    else:
        added, updated, removed = _diff_keys(old, new, touched, wide)
    return Update(new.manifest.dataset, old.version, new.version, added, updated, removed)


def _diff_keys(old: View, new: View, touched: list[pa.Array], wide: Schema) -> tuple[frozenset[Any], ...]:
    keys = list({key for array in touched for key in array.to_pylist()})
    added: set[Any] = set()
    updated: set[Any] = set()
    removed: set[Any] = set()
    befores, afters = old.get_many(keys), new.get_many(keys)
    if old.schema.columns != new.schema.columns:
        befores, afters = ([None if r is None else conform_record(r, wide) for r in records]
                           for records in (befores, afters))
    for key, before, after in zip(keys, befores, afters):
        if before == after:
            continue
        (added if before is None else removed if after is None else updated).add(key)
    return frozenset(added), frozenset(updated), frozenset(removed)


def _diff_tables(old: View, new: View, wide: Schema) -> tuple[frozenset[Any], ...]:
    key = new.schema.key_field
    before, after = conform(old.table, wide), conform(new.table, wide)
    old_keys, new_keys = before.column(key), after.column(key)
    kept_old = pc.is_in(old_keys, value_set=new_keys.combine_chunks())
    kept_new = pc.is_in(new_keys, value_set=old_keys.combine_chunks())
    removed = old_keys.filter(pc.invert(kept_old)).to_pylist()
    added = new_keys.filter(pc.invert(kept_new)).to_pylist()
    # Both tables are sorted by key, so the kept rows line up one to one.
    left, right = before.filter(kept_old), after.filter(kept_new)
    changed = pa.array(np.zeros(left.num_rows, bool))
    for name, kind in wide.columns.items():
        x, y = left.column(name), right.column(name)
        if is_nested(kind):
            # Arrow compares no nested values: compare their 64-bit value hashes (those of the state checksum).
            (xh, xv), (yh, yv) = (value_hashes(c.combine_chunks(), kind) for c in (x, y))
            differs = pa.array((xv != yv) | (xv & (xh != yh)))
        else:
            differs = pc.or_(pc.fill_null(pc.not_equal(x, y), False), pc.xor(pc.is_null(x), pc.is_null(y)))
        changed = pc.or_(changed, differs)
    updated = right.column(key).filter(changed).to_pylist()
    return frozenset(added), frozenset(updated), frozenset(removed)


class Listeners:
    """The callbacks of one consumer. One that raises is logged and the others still run."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._callbacks: list[Listener] = []
        self._lock = threading.Lock()

    def add(self, callback: Listener) -> Listener:
        with self._lock:
            self._callbacks = [*self._callbacks, callback]  # a new list: notify() iterates a snapshot
        return callback

    def remove(self, callback: Listener) -> None:
        with self._lock:
            self._callbacks = [c for c in self._callbacks if c is not callback]

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def notify(self, update: Update) -> None:
        for callback in self._callbacks:
            try:
                callback(update)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the refresh or other listeners
                log.exception("%s: on_update listener %r failed for version %d -> %d", self.name, callback,
                              update.from_version, update.to_version)
