"""Any two versions compared, and the history of one key, read from a dataset's manifests and blobs.

A diff is computed one of two ways (consumer/diff.py), whichever reads fewer
bytes of blobs, as the manifests record their sizes: from the forward and
reverse deltas between the two versions, or by loading both versions whole
(each from its nearest snapshot, shared blobs read once). The deltas need
every version in between to be in the store with its deltas: a version gc
removed, or one that changed a column's type (a snapshot only), leaves only
the states. The Diff says which way was taken and how many bytes it read.

A key's history walks the versions still in the store, oldest first. A
version right after one already read says through its delta whether it
changed the key; the first version read, one after versions gc removed, and
a snapshot-only version are read from their state instead, and compared
with what came before by row digest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from combe.format.checksum import row_digests
from combe.format.dataset import Dataset
from combe.format.delta import ADDED, OP_COLUMN, OP_NAMES, REMOVED, UPDATED, apply_deltas
from combe.format.errors import ConfigError, DatasetNotFound
from combe.format.keys import lookup_key
from combe.format.index import split_index
from combe.format.manifest import BlobRef, Manifest
from combe.format.schema import conform

from .diff import Diff, from_deltas, from_states, records
from .loader import Blobs, StoreBlobs
from .rows import Record
from .view import View

METHODS = ("deltas", "states")


@dataclass(frozen=True)
class KeyChange:
    """One version at which a key changed.

    ``op`` is ``added``, ``updated`` or ``removed``, compared with version
    ``since`` (the version before, or the last one known before versions gc
    removed); or ``present`` for the key's record at the oldest version still
    in the store, whose earlier history gc removed (``since`` is None then,
    and for a key added at version 1). ``record`` is the key's record at
    ``version`` (None when removed).
    """

    version: int
    since: int | None
    op: str
    record: Record | None
    created_at: str


@dataclass(frozen=True)
class KeyHistory:
    """Every version up to ``to_version`` still in the store at which ``key`` changed, oldest first.

    ``removed_by_gc`` lists the version ranges (first, last) no longer in the
    store: a change inside one shows at the next version kept, compared with
    the last version before the range; one undone inside it does not show.
    """

    dataset: str
    key: Any
    to_version: int
    changes: list[KeyChange] = field(default_factory=list)
    removed_by_gc: list[tuple[int, int]] = field(default_factory=list)


class Timeline:
    """Diffs between any two announced versions still in the store, and per-key histories.

    ``blobs`` is where blobs are read (a Consumer passes its blob cache);
    by default straight from the store.
    """

    def __init__(self, dataset: Dataset, blobs: Blobs | None = None) -> None:
        self.dataset = dataset
        self.blobs = blobs or StoreBlobs(dataset)
        # Manifests never change, so those read are kept (a dict read or write is atomic: threads may share this).
        self._manifests: dict[int, Manifest] = {}

    @classmethod
    def open(cls, store: str, dataset: str, storage_options: dict[str, Any] | None = None) -> Timeline:
        return cls(Dataset.open(store, dataset, storage_options))

    def manifest(self, version: int) -> Manifest:
        found = self._manifests.get(version)
        if found is None:
            found = self._manifests[version] = self.dataset.manifest(version)
        return found

    def _table(self, ref: BlobRef, owner: Manifest) -> pa.Table:
        """A blob's table, read through ``blobs``; ``owner`` is the manifest that references it."""
        return self.blobs.table(ref, owner)

    # -- diff --------------------------------------------------------------------------------

    def diff(self, from_version: int, to_version: int, *, method: str | None = None,
             current: View | None = None) -> Diff:
        """What changed from ``from_version`` to ``to_version`` (either may be the older one).

        ``method`` forces ``"deltas"`` or ``"states"`` (ConfigError if the
        deltas cannot give it); by default the one that reads fewer bytes.
        ``current`` is a View already held (with every column) that the
        states may start from.
        """
        versions = self._announced_and_kept([from_version, to_version])
        a, b = versions
        if method is not None and method not in METHODS:
            raise ConfigError(f"method={method!r}: use one of {', '.join(METHODS)}, or None to pick the cheaper")
        if current is not None and current.columns is not None:
            current = None  # a View projected to some columns cannot stand for a whole version
        low, high = min(a, b), max(a, b)
        by_deltas = self._deltas_cost(low, high)
        if method == "deltas" and by_deltas is None:
            raise ConfigError(f"{self.dataset.name}: the difference between versions {low} and {high} cannot be "
                              "read from deltas: a version between them has none (it changed a column's type) or "
                              "was removed by gc; use method='states'")
        if method == "deltas" or (method is None and by_deltas is not None
                                  and by_deltas <= self._states_cost(a, b, current)):
            found = self._from_deltas(low, high, by_deltas or 0)
            return found if a == low else found.reversed()
        return self._from_states(a, b, current)

    def _announced_and_kept(self, versions: list[Any]) -> list[int]:
        """The versions, each announced and still in the store; 404-style errors otherwise."""
        for version in versions:
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ConfigError(f"version {version!r}: versions are whole numbers from 1")
        announced = self.dataset.require_announced().version
        kept = set(self.dataset.versions())
        for version in versions:
            if version > announced:
                raise DatasetNotFound(f"{self.dataset.name} has no announced version {version} (the announced "
                                      f"version is {announced})", dataset=self.dataset.name)
            if version not in kept:
                raise DatasetNotFound(f"version {version} of {self.dataset.name} is no longer in the store "
                                      "(removed by gc)", dataset=self.dataset.name)
        return versions

    def _deltas_cost(self, low: int, high: int) -> int | None:
        """Bytes of the forward and reverse deltas of low+1 .. high; None if one is missing."""
        total = 0
        for version in range(low + 1, high + 1):
            try:
                manifest = self.manifest(version)
            except DatasetNotFound:
                return None
            if manifest.delta is None or manifest.reverse is None:
                return None
            total += manifest.delta.bytes + manifest.reverse.bytes
        return total

    def _state_blobs(self, version: int, held: Iterable[int]) -> tuple[int | None, list[tuple[BlobRef, Manifest]]]:
        """How to reach the whole state at ``version``: the held state it starts from (None: its nearest
        snapshot), and the blobs to read in order, each with the manifest that references it.

        A held state helps when it is on the same snapshot's chain, at or below ``version``.
        """
        manifest = self.manifest(version)
        start = max((v for v in held if manifest.snapshot_version <= v <= version), default=None)
        blobs: list[tuple[BlobRef, Manifest]] = []
        if start is None:
            snapshot = self.manifest(manifest.snapshot_version)
            assert snapshot.snapshot is not None
            blobs.append((snapshot.snapshot, snapshot))
        for step in range((manifest.snapshot_version if start is None else start) + 1, version + 1):
            owner = self.manifest(step)
            assert owner.delta is not None
            blobs.append((owner.delta, owner))
        return start, blobs

    def _states_cost(self, a: int, b: int, current: View | None) -> int:
        """Bytes of the blobs loading both versions reads (a blob they share once; the held snapshot not at all)."""
        held = [] if current is None else [current.base_version]
        needed: dict[str, int] = {}
        for version in (a, b):
            needed.update((ref.path, ref.bytes) for ref, _ in self._state_blobs(version, held)[1])
            held.append(version)
        return sum(needed.values())

    def _from_deltas(self, low: int, high: int, cost: int) -> Diff:
        forward, reverse = [], []
        for version in range(low + 1, high + 1):
            manifest = self.manifest(version)
            assert manifest.delta is not None and manifest.reverse is not None
            forward.append(self._table(manifest.delta, manifest))
            reverse.append(self._table(manifest.reverse, manifest))
        schemas = (self.manifest(low).schema, self.manifest(high).schema)
        return from_deltas(self.dataset.name, (low, high), forward, reverse, schemas, cost)

    def _from_states(self, a: int, b: int, current: View | None) -> Diff:
        """Both states whole, as Arrow tables: a snapshot (or a state already held) plus deltas applied columnwise.

        A View's ``table`` is not used for this: a View keeps delta rows as
        dicts, and turning them back into columns costs more than applying
        the deltas again. The snapshot a ``current`` View is built on is used
        as it is, with no copy and no read.
        """
        held: dict[int, pa.Table] = {}
        if current is not None:
            held[current.base_version] = conform(current.base.table, self.manifest(current.base_version).schema)
        cost = 0
        for version in (a, b):
            if version in held:
                continue
            start, blobs = self._state_blobs(version, held)
            if start is None:
                snapshot, owner = blobs.pop(0)  # the snapshot comes first
                table = conform(split_index(self._table(snapshot, owner))[0], owner.schema)
                cost += snapshot.bytes
            else:
                table = held[start]
            deltas = [self._table(ref, owner) for ref, owner in blobs]
            cost += sum(ref.bytes for ref, _ in blobs)
            held[version] = apply_deltas(table, deltas, self.manifest(version).schema,
                                         what=f"the deltas up to version {version}") if deltas else table
        before, after = self.manifest(a).schema, self.manifest(b).schema
        return from_states(self.dataset.name, (a, b), held[a], held[b], (before, after), cost)

    # -- history -----------------------------------------------------------------------------

    def history(self, key: Any, *, to_version: int | None = None) -> KeyHistory:
        """Every version up to ``to_version`` (default: the announced one) at which ``key`` changed."""
        announced = self.dataset.require_announced().version
        upto = announced if to_version is None else self._announced_and_kept([to_version])[0]
        schema = self.manifest(upto).schema
        key = lookup_key(key, schema.key_type)
        return self._walk(key, [v for v in self.dataset.versions() if v <= upto], upto)

    def _walk(self, key: Any, versions: Iterable[int], upto: int) -> KeyHistory:
        history = KeyHistory(self.dataset.name, key, upto)
        known = 0  # the last version read
        row: pa.Table | None = None  # the key's row at ``known`` (one row), None if absent there
        for version in versions:
            try:
                manifest = self.manifest(version)
                contiguous = known and version == known + 1 and manifest.delta is not None
                if contiguous:
                    assert manifest.delta is not None
                    delta = self._table(manifest.delta, manifest)
                    at = _find(delta, key)
                    if at is None:
                        known = version
                        continue
                    found = delta.slice(at, 1)
                    new = None if found.column(OP_COLUMN)[0].as_py() == REMOVED else found
                else:
                    new = self._row_at(manifest, key)
            except DatasetNotFound:
                continue  # removed by gc while this ran: counted with the versions gc removed
            if version != known + 1:
                history.removed_by_gc.append((known + 1, version - 1))
            op = _op(row, new, first=not known, at_start=version == 1)
            if op is not None:
                record = None if new is None else records(conform(new, manifest.schema), manifest.schema)[0]
                history.changes.append(KeyChange(version, known or None, op, record, manifest.created_at))
            known, row = version, new
        return history

    def _row_at(self, manifest: Manifest, key: Any) -> pa.Table | None:
        """The key's row at ``manifest``'s version: from its nearest snapshot, then the deltas after it."""
        snapshot = self.manifest(manifest.snapshot_version)
        assert snapshot.snapshot is not None
        table = self._table(snapshot.snapshot, snapshot)
        at = _find(table, key)
        row = None if at is None else table.slice(at, 1)
        for version in range(snapshot.version + 1, manifest.version + 1):
            step = self.manifest(version)
            assert step.delta is not None
            delta = self._table(step.delta, step)
            at = _find(delta, key)
            if at is not None:
                row = None if delta.column(OP_COLUMN)[at].as_py() == REMOVED else delta.slice(at, 1)
        return row


def _find(table: pa.Table, key: Any) -> int | None:
    """The row of ``key`` in a blob's table (the key column comes first), or None."""
    keys = table.column(0)
    at = pc.index(keys, pa.scalar(key, keys.type)).as_py()
    return None if at < 0 else int(at)


def _op(before: pa.Table | None, after: pa.Table | None, *, first: bool, at_start: bool) -> str | None:
    """How a key went from ``before`` to ``after`` (one-row tables, None when absent); None for no change."""
    if first:
        return None if after is None else OP_NAMES[ADDED] if at_start else "present"
    if before is None:
        return None if after is None else OP_NAMES[ADDED]
    if after is None:
        return OP_NAMES[REMOVED]
    return None if row_digests(before)[0] == row_digests(after)[0] else OP_NAMES[UPDATED]
