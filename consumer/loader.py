"""Reaching a version: plan the cheapest path, fetch and verify blobs, build the View.

From the View a consumer has, a target version is reached by deltas (forward
deltas going up, reverse deltas going back), from the snapshot the current
View is built on plus forward deltas, or from the snapshot nearest at or
before the target plus forward deltas. The plan with the fewest bytes to
fetch wins, except that a View's delta chain is not allowed to grow past
``max_deltas`` deltas or past the bytes of its snapshot: the overlay that
holds those changes costs far more memory and lookup time than the same
rows in a snapshot, so then a snapshot is loaded instead.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from combe.format.codec import ipc_file_bytes, read_ipc
from combe.format.dataset import Dataset
from combe.format.delta import OP_COLUMN
from combe.format.errors import DatasetNotFound, IntegrityError
from combe.format.index import INDEX_ENDS, INDEX_ROWS
from combe.format.manifest import BlobRef, Manifest

from .base import Base
from .view import View

log = logging.getLogger(__name__)


class Blobs(Protocol):
    """Where a loader gets a blob's table: straight from the store, or through a cache.

    ``owner`` is the manifest that references the blob; the table is checked
    against it (Manifest.check_blob) before it is returned. ``fetched``
    counts the bytes downloaded from the store so far (a blob found in a
    cache costs none), so a load can say what it really fetched.
    """

    @property
    def fetched(self) -> int: ...

    def table(self, ref: BlobRef, owner: Manifest) -> pa.Table: ...


class StoreBlobs:
    """Download, verify the sha256, decompress, read.

    With ``columns``, only those columns (and the ones every blob needs) are
    kept, copied out of the decompressed blob so that the rest is freed.
    """

    def __init__(self, dataset: Dataset, columns: Collection[str] | None = None) -> None:
        self.dataset = dataset
        self.columns = None if columns is None else {*columns, OP_COLUMN, INDEX_ROWS, INDEX_ENDS}
        self.fetched = 0

    def table(self, ref: BlobRef, owner: Manifest) -> pa.Table:
        path = f"{self.dataset.url}/{ref.path}"
        table = self.dataset.blob_table(ref, owner)
        self.fetched += ref.bytes
        if self.columns is None or set(table.column_names) <= self.columns:
            return table
        # The key column comes first in every blob; keep it whatever it is named.
        kept = table.select([n for i, n in enumerate(table.column_names) if i == 0 or n in self.columns])
        return read_ipc(ipc_file_bytes(kept), path=path)


@dataclass
class Plan:
    """How to reach a version: where to start, then deltas in order.

    ``start`` is "current" (the View held now), "base" (the snapshot the
    current View is built on, with no overlay) or "snapshot" (download one).
    """

    start: str
    snapshot: Manifest
    steps: list[tuple[Manifest, BlobRef]]  # (the manifest of the version reached, the delta blob)
    cost: int  # bytes to fetch, were none of the blobs cached: what plans are compared by
    chain: tuple[int, int] = (0, 0)  # the resulting View's delta chain: (deltas, bytes)
    reverse: int = 0  # how many of the steps are reverse deltas
    fetched: int = 0  # bytes the load really downloaded, set by Loader.load (blobs found in a cache cost none)

    def describe(self) -> str:
        start = {"current": "the current view", "base": f"snapshot {self.snapshot.version} (already loaded)",
                 "snapshot": f"snapshot {self.snapshot.version}"}[self.start]
        forward = len(self.steps) - self.reverse
        return (f"{start} + {forward} delta{'s' * (forward != 1)}"
                + (f" + {self.reverse} reverse delta{'s' * (self.reverse != 1)}" if self.reverse else "")
                + f" ({self.fetched} bytes fetched)")


@dataclass
class Loaded:
    """A View reached by a plan, and the keys its deltas touched since the View it started from.

    ``touched`` is None when a snapshot was loaded: then only a full
    comparison tells what changed.
    """

    view: View
    plan: Plan
    touched: list[pa.Array] | None = None


class Loader:
    def __init__(self, dataset: Dataset, blobs: Blobs | None = None, *, max_deltas: int = 32,
                 columns: Collection[str] | None = None) -> None:
        self.dataset = dataset
        self.columns = None if columns is None else frozenset(columns)
        self.blobs = blobs or StoreBlobs(dataset, self.columns)
        self.max_deltas = max_deltas
        self._manifests: dict[int, Manifest] = {}  # manifests never change, so keeping them is safe

    def manifest(self, version: int) -> Manifest:
        if version not in self._manifests:
            self._manifests[version] = self.dataset.manifest(version)
        return self._manifests[version]

    def load(self, target: int, current: View | None = None) -> Loaded:
        """The View of ``target``, reusing ``current`` where that is cheaper."""
        stay = self._by_deltas(target, current)
        if stay is not None and not stay.steps:
            return Loaded(current, stay, [])  # type: ignore[arg-type]
        plans = [p for p in (stay, self._from_snapshot(target, current)) if p]
        within = [p for p in plans if self._within_limits(p)]
        plan = min(within or plans, key=lambda p: p.cost)
        fetched_before = self.blobs.fetched
        touched: list[pa.Array] | None = None
        if plan.start == "snapshot":
            assert plan.snapshot.snapshot is not None
            log.info("%s: loading snapshot %d", self.dataset.name, plan.snapshot.version)
            base = Base(self.blobs.table(plan.snapshot.snapshot, plan.snapshot), plan.snapshot.schema, self.columns)
            view = _verified(View(plan.snapshot, base, plan.snapshot.version, columns=self.columns))
        else:
            assert current is not None
            touched = []
            if plan.start == "current":
                view = current
            else:
                view = View(plan.snapshot, current.base, current.base_version, columns=self.columns)
                touched.append(current._overlay_keys)
        for manifest, ref in plan.steps:
            # A reverse delta is referenced by the version it leads back from.
            owner = manifest if ref == manifest.delta else self.manifest(manifest.version + 1)
            delta = self.blobs.table(ref, owner)
            if touched is not None:
                touched.append(delta.column(0).combine_chunks())
            view = _verified(view.with_delta(manifest, delta, ref.bytes))
        plan.fetched = self.blobs.fetched - fetched_before
        log.info("%s: at version %d by %s", self.dataset.name, view.version, plan.describe())
        return Loaded(view, plan, touched)

    def _within_limits(self, plan: Plan) -> bool:
        assert plan.snapshot.snapshot is not None
        deltas, nbytes = plan.chain
        return deltas <= self.max_deltas and (not deltas or nbytes <= plan.snapshot.snapshot.bytes)

    def _by_deltas(self, target: int, current: View | None) -> Plan | None:
        """Walk from the current View delta by delta (reverse deltas to go back)."""
        if current is None:
            return None
        steps: list[tuple[Manifest, BlobRef]] = []
        version = current.version
        while version != target:
            try:
                if target > version:
                    manifest = self.manifest(version + 1)
                    ref = manifest.delta
                    version += 1
                else:
                    ref = self.manifest(version).reverse
                    version -= 1
                    manifest = self.manifest(version)
            except DatasetNotFound:
                return None  # a version on the way was removed by gc; the snapshot plan does not need it
            if ref is None:
                return None  # a schema-change version has no deltas: it is reached from its snapshot
            steps.append((manifest, ref))
        cost = sum(ref.bytes for _, ref in steps)
        base = self.manifest(current.base_version)
        return Plan("current", base, steps, cost, (current.deltas_applied + len(steps), current.chain_bytes + cost),
                    reverse=len(steps) if target < current.version else 0)

    def _from_snapshot(self, target: int, current: View | None) -> Plan:
        """The nearest snapshot at or before ``target``, then forward deltas; reuse it if already loaded."""
        manifest = self.manifest(target)
        snapshot = self.manifest(manifest.snapshot_version)
        steps = []
        for version in range(snapshot.version + 1, target + 1):
            step = self.manifest(version)
            assert step.delta is not None
            steps.append((step, step.delta))
        reuse = current is not None and current.base_version == snapshot.version
        assert snapshot.snapshot is not None
        deltas = sum(ref.bytes for _, ref in steps)
        cost = (0 if reuse else snapshot.snapshot.bytes) + deltas
        return Plan("base" if reuse else "snapshot", snapshot, steps, cost, (len(steps), deltas))


def _verified(view: View) -> View:
    """The View, once the records it holds are as many as its manifest records."""
    if len(view) != view.manifest.record_count:
        raise IntegrityError(f"{view.manifest.dataset} version {view.version}: {len(view)} records loaded, but its "
                             f"manifest records {view.manifest.record_count}; not serving it")
    return view
