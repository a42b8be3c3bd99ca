"""Reaching a version: plan the cheapest path, fetch and verify blobs, build the View.

From the View a consumer has, a target version is reached either by deltas
(forward deltas going up, reverse deltas going back) or from the snapshot
nearest at or before the target plus forward deltas. The plan with fewer
bytes to fetch wins; a delta chain longer than ``max_deltas`` is not kept,
so a long-running consumer reloads from a newer snapshot now and then.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from combe.format.codec import decode_blob
from combe.format.dataset import Dataset
from combe.format.errors import DatasetNotFound
from combe.format.manifest import BlobRef, Manifest

from .base import Base
from .view import View

log = logging.getLogger(__name__)


class Blobs(Protocol):
    """Where a loader gets a blob's table: straight from the store, or through a cache."""

    def table(self, ref: BlobRef) -> pa.Table: ...


class StoreBlobs:
    """Download, verify the sha256, decompress, read."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def table(self, ref: BlobRef) -> pa.Table:
        data = self.dataset.read_blob(ref)
        return decode_blob(data, ref.sha256, path=f"{self.dataset.url}/{ref.path}")


@dataclass
class Plan:
    """How to reach a version: where to start, then deltas in order.

    ``start`` is "current" (the View held now), "base" (the snapshot the
    current View is built on, with no overlay) or "snapshot" (download one).
    """

    start: str
    snapshot: Manifest
    steps: list[tuple[Manifest, BlobRef]]  # (the manifest of the version reached, the delta blob)
    cost: int


class Loader:
    def __init__(self, dataset: Dataset, blobs: Blobs | None = None, *, max_deltas: int = 32) -> None:
        self.dataset = dataset
        self.blobs = blobs or StoreBlobs(dataset)
        self.max_deltas = max_deltas
        self._manifests: dict[int, Manifest] = {}  # manifests never change, so keeping them is safe

    def manifest(self, version: int) -> Manifest:
        if version not in self._manifests:
            self._manifests[version] = self.dataset.manifest(version)
        return self._manifests[version]

    def load(self, target: int, current: View | None = None) -> View:
        """The View of ``target``, reusing ``current`` where that is cheaper."""
        if current is not None and current.version == target:
            return current
        plans = [p for p in (self._by_deltas(target, current), self._from_snapshot(target, current)) if p]
        plan = min(plans, key=lambda p: p.cost)
        if plan.start == "snapshot":
            assert plan.snapshot.snapshot is not None
            log.info("%s: loading snapshot %d", self.dataset.name, plan.snapshot.version)
            base = Base(self.blobs.table(plan.snapshot.snapshot), plan.snapshot.schema)
            view = View(plan.snapshot, base, plan.snapshot.version)
        else:
            assert current is not None
            view = current if plan.start == "current" else View(plan.snapshot, current.base, current.base_version)
        for manifest, ref in plan.steps:
            view = view.with_delta(manifest, self.blobs.table(ref))
        log.info("%s: at version %d (%d deltas over snapshot %d)", self.dataset.name, view.version,
                 view.deltas_applied, view.base_version)
        return view

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
        if current.deltas_applied + len(steps) > self.max_deltas:
            return None
        return Plan("current", current.manifest, steps, sum(ref.bytes for _, ref in steps))

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
        cost = (0 if reuse else snapshot.snapshot.bytes) + sum(ref.bytes for _, ref in steps)
        return Plan("base" if reuse else "snapshot", snapshot, steps, cost)
