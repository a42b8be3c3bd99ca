"""A dataset's version history and what each version changed, read from its manifests and delta blobs.

Manifests and blobs are never modified once written, so whatever is read is
kept (a bounded number of each): a client paging through one version's
changes downloads and decodes its blobs once, not once per page.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa

from combe.format.dataset import Dataset
from combe.format.delta import ADDED, OP_COLUMN, OP_NAMES, REMOVED
from combe.format.errors import ObjectNotFound
from combe.format.index import split_index
from combe.format.manifest import Manifest
from combe.format.schema import conform

from ..diff import Diff, records
from ..loader import Blobs
from ..timeline import KeyHistory, Timeline
from ..view import View

K = TypeVar("K")
V = TypeVar("V")


class _Bounded(Generic[K, V]):
    """A least-recently-used map of at most ``size`` entries, safe to share between request threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()  # outside the lock: two threads may both build it, and that is harmless
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


@dataclass(frozen=True)
class VersionChanges:
    """The rows one version added, updated and removed, sorted by key, with the old values where known."""

    manifest: Manifest
    rows: pa.Table  # key, value columns and the op column
    before: pa.Table | None  # the reverse delta: old values, row for row with ``rows``

    @property
    def counts(self) -> dict[str, int]:
        ops = np.bincount(self.rows.column(OP_COLUMN).to_numpy(), minlength=4)
        return {name: int(ops[op]) for op, name in OP_NAMES.items()}

    def page(self, offset: int, limit: int) -> list[dict[str, Any]]:
        """Rows ``offset`` to ``offset + limit``: op, key, the new record and the old one."""
        schema = self.manifest.schema
        rows = self.rows.slice(offset, limit)
        ops = rows.column(OP_COLUMN).to_pylist()
        found = records(rows, schema)
        olds: list[dict[str, Any] | None] = [None] * len(found)
        if self.before is not None:
            before = self.before.slice(offset, limit)
            if before.column(schema.key_field).equals(rows.column(schema.key_field)):
                old_ops = before.column(OP_COLUMN).to_pylist()
                olds = [row if op != REMOVED else None for row, op in zip(records(before, schema), old_ops)]
        out = []
        for op, record, old in zip(ops, found, olds):
            out.append({"op": OP_NAMES[op], "key": record[schema.key_field],
                        "record": None if op == REMOVED else record, "before": old})
        return out


class History:
    def __init__(self, dataset: Dataset, blobs: Blobs, *, manifests: int = 4096, versions: int = 8) -> None:
        self.dataset = dataset
        self.blobs = blobs
        self._manifests: _Bounded[int, Manifest] = _Bounded(manifests)
        self._changes: _Bounded[int, VersionChanges] = _Bounded(versions)

    def versions(self) -> list[int]:
        """Every version with a manifest in the store, ascending (a listing: never cached, gc may remove some)."""
        return self.dataset.versions()

    def manifest(self, version: int) -> Manifest:
        return self._manifests.get(version, lambda: self.dataset.manifest(version))

    def changes(self, version: int) -> VersionChanges:
        return self._changes.get(version, lambda: self._read_changes(version))

    def _read_changes(self, version: int) -> VersionChanges:
        manifest = self.manifest(version)
        schema = manifest.schema
        if manifest.delta is not None:
            rows = self.blobs.table(manifest.delta, manifest)
            before = self.blobs.table(manifest.reverse, manifest) if manifest.reverse is not None else None
            return VersionChanges(manifest, rows, before)
        if manifest.parent is None and manifest.snapshot is not None:
            # The first version: every record in its snapshot was added.
            state = conform(split_index(self.blobs.table(manifest.snapshot, manifest))[0], schema)
            ops = pa.array(np.full(state.num_rows, ADDED, dtype=np.int8))
            return VersionChanges(manifest, state.append_column(OP_COLUMN, ops), None)
        raise ObjectNotFound(f"version {version} of {self.dataset.name!r} has no delta blob (it was published "
                             "as a snapshot only), so its changes cannot be listed", url=self.dataset.url)


class Comparisons:
    """Diffs between versions and key histories of one dataset, kept once computed (a bounded number of each).

    A client paging through a diff or a history reads the blobs once, not
    once per page. A diff of two versions never changes; a key's history is
    kept per newest version it covers.
    """

    def __init__(self, timeline: Timeline, *, diffs: int = 4, histories: int = 64) -> None:
        self.timeline = timeline
        self._diffs: _Bounded[tuple[int, int], Diff] = _Bounded(diffs)
        self._histories: _Bounded[tuple[Any, int], KeyHistory] = _Bounded(histories)

    def diff(self, from_version: int, to_version: int, current: View) -> Diff:
        return self._diffs.get((from_version, to_version),
                               lambda: self.timeline.diff(from_version, to_version, current=current))

    def history(self, key: Any, to_version: int) -> KeyHistory:
        return self._histories.get((key, to_version), lambda: self.timeline.history(key, to_version=to_version))
