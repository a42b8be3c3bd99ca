"""Retention (``combe gc``): delete the manifests and blobs that no kept version needs.

A consumer reaches version v from v's nearest snapshot (its
``snapshot_version``) plus the forward deltas after it, reading every
manifest from the snapshot's to v's on the way. So gc first picks the
versions to keep (the newest N announced, those younger than D days, the
announced version, the store-wide pin, and any version above the announced
one, which a producer may be about to announce), then keeps every manifest
on their chains and every blob a kept manifest references. Every manifest
that stays is therefore loadable, and the deltas and reverse deltas between
kept versions stay too.

Everything else goes: manifests oldest first, so an interrupted gc leaves
the oldest versions missing and never a hole in the middle, then their
blobs. Blobs that no manifest references are left over by failed or
refused cycles; they are deleted once older than a grace period, because a
running producer writes its blobs before its manifest. So are the temporary
files of writes that never finished (a producer killed while writing a blob,
a manifest or ``announced.json`` on a local store): a write that is still
going on is far younger than the grace period. ``announced.json`` is never
touched.

A sharded dataset's version is one sharded manifest naming a version of
every shard, with no chain of its own: gc keeps the sharded manifests of the
versions the policy keeps, and in each shard the shard versions they name
(each with its chain, as above) and every shard version newer than any
sharded manifest names (a head not committed yet, or a version written and
not yet announced at its head). Sharded manifests go first, so an
interrupted gc never leaves a dataset version whose shard versions are gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from combe.format.dataset import Dataset
from combe.format.errors import ConfigError, ConflictError, DatasetNotFound, FormatError
from combe.format.layout import BLOBS_DIR, VERSIONS_DIR, is_blob_path, manifest_path, manifest_version, shard_dir
from combe.format.manifest import Manifest, Pointer, parse_time
from combe.format.sharded import ShardedManifest
from combe.format.store import ObjectInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    """What ``combe gc`` keeps (its flags are these fields)."""

    keep_versions: int
    keep_days: float | None = None
    grace_hours: float = 24.0

    def __post_init__(self) -> None:
        if self.keep_versions < 1:
            raise ConfigError(f"keep_versions={self.keep_versions}: keep at least 1 version")
        if (self.keep_days is not None and self.keep_days < 0) or self.grace_hours < 0:
            raise ConfigError("keep_days and grace_hours must be 0 or more")


@dataclass(frozen=True)
class Deletion:
    path: str
    bytes: int
    reason: str


@dataclass
class GcPlan:
    """What gc keeps and deletes, in the order it deletes."""

    dataset: str
    announced: int
    pin: int | None
    kept: list[int]        # the versions the policy keeps
    manifests: list[int]   # every manifest that stays: the kept versions and the ones they are built on
    deletions: list[Deletion] = field(default_factory=list)
    shards: dict[int, list[int]] | None = None  # of a sharded dataset: each shard's manifests that stay

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.deletions)


@dataclass(frozen=True)
class Chain:
    """One chain of versions as listed and read from the store: a dataset's, or a shard's under ``prefix``."""

    manifests: dict[int, Manifest]
    manifest_sizes: dict[int, int]
    blobs: list[ObjectInfo]
    temporaries: list[ObjectInfo] = field(default_factory=list)
    prefix: str = ""  # the chain's folder in the dataset: "" or "shards/<i>/"


def _kept_versions(pointer: Pointer, manifests: Mapping[int, Manifest | ShardedManifest], retention: Retention,
                   now: datetime) -> set[int]:
    announced = [v for v in sorted(manifests) if v <= pointer.version]
    kept = set(announced[-retention.keep_versions:]) | {pointer.version} | {v for v in manifests if v > pointer.version}
    if pointer.pin is not None:
        kept.add(pointer.pin)
    if retention.keep_days is not None:
        cutoff = now - timedelta(days=retention.keep_days)
        for version in announced:
            if parse_time(manifests[version].created_at) >= cutoff:
                kept.add(version)
    return kept


def plan_gc(dataset: str, pointer: Pointer, manifests: dict[int, Manifest], manifest_sizes: dict[int, int],
            blobs: list[ObjectInfo], retention: Retention, now: datetime,
            temporaries: list[ObjectInfo] | None = None) -> GcPlan:
    """Decide what to delete. Pure: the caller lists and reads the store and does the deleting.

    ``temporaries`` are the store's files of unfinished writes (Store.temporaries).
    """
    kept = _kept_versions(pointer, manifests, retention, now)
    needed, deletions = _plan_chain(dataset, kept, Chain(manifests, manifest_sizes, blobs, temporaries or []),
                                    retention, now)
    return GcPlan(dataset, pointer.version, pointer.pin, sorted(kept), sorted(needed), deletions)


def plan_sharded_gc(dataset: str, pointer: Pointer, manifests: dict[int, ShardedManifest],
                    manifest_sizes: dict[int, int], temporaries: list[ObjectInfo], shards: list[Chain],
                    retention: Retention, now: datetime) -> GcPlan:
    """Decide what to delete of a sharded dataset: its sharded manifests, then each shard's chain (``shards``,
    in shard order). Pure, like plan_gc."""
    kept = _kept_versions(pointer, manifests, retention, now)
    missing = sorted(kept - set(manifests))
    if missing:
        raise FormatError(f"{dataset}: version(s) {missing} are announced or pinned but have no manifest; the "
                          "dataset is damaged, so gc deletes nothing. Re-publish or re-pin it first.")
    deletions = [Deletion(manifest_path(v), manifest_sizes.get(v, 0), f"version {v} is not kept")
                 for v in sorted(set(manifests) - kept)]
    deletions += _unfinished(temporaries, retention, now)
    stays: dict[int, list[int]] = {}
    for index, chain in enumerate(shards):
        newest = max((m.shards[index].version for m in manifests.values()), default=0)
        # A shard version no sharded manifest names yet is the next commit's to name.
        wanted = {manifests[v].shards[index].version for v in kept} | {v for v in chain.manifests if v > newest}
        needed, part = _plan_chain(f"{dataset} shard {index}", wanted, chain, retention, now)
        deletions += part
        stays[index] = sorted(needed)
    return GcPlan(dataset, pointer.version, pointer.pin, sorted(kept), sorted(kept), deletions, stays)


def _plan_chain(label: str, kept: set[int], chain: Chain, retention: Retention,
                now: datetime) -> tuple[set[int], list[Deletion]]:
    """The manifests of one chain that stay (``kept`` and what they are built on), and what goes, in order."""
    manifests, prefix = chain.manifests, chain.prefix
    needed: set[int] = set()
    for version in sorted(kept):
        if version not in manifests:
            raise FormatError(f"{label}: version {version} is announced or pinned but has no manifest; the "
                              "dataset is damaged, so gc deletes nothing. Re-publish or re-pin it first.")
        span = range(manifests[version].snapshot_version, version + 1)
        missing = [v for v in span if v not in manifests]
        if missing:
            raise FormatError(f"{label}: version {version} is built on version(s) {missing}, whose manifests "
                              "are gone; the dataset is damaged, so gc deletes nothing.")
        needed.update(span)

    deletions: list[Deletion] = []
    referenced: dict[str, int] = {}  # blob path -> the version whose manifest references it
    for version, manifest in sorted(manifests.items()):
        for ref in (manifest.snapshot, manifest.delta, manifest.reverse):
            if ref is not None:
                referenced[ref.path] = version
    for version in sorted(set(manifests) - needed):
        deletions.append(Deletion(prefix + manifest_path(version), chain.manifest_sizes.get(version, 0),
                                  f"version {version} is not kept"))
    grace = timedelta(hours=retention.grace_hours)
    for info in chain.blobs:
        owner = referenced.get(info.path)
        if owner is not None:
            if owner not in needed:
                deletions.append(Deletion(prefix + info.path, info.size,
                                          f"blob of version {owner}, which is not kept"))
        elif is_blob_path(info.path) and info.modified is not None and now - info.modified > grace:
            hours = (now - info.modified).total_seconds() / 3600
            deletions.append(Deletion(prefix + info.path, info.size,
                                      f"referenced by no manifest (a failed or refused cycle), {hours:.1f} h old"))
    deletions += _unfinished(chain.temporaries, retention, now, prefix)
    return needed, deletions


def _unfinished(temporaries: list[ObjectInfo], retention: Retention, now: datetime,
                prefix: str = "") -> list[Deletion]:
    grace = timedelta(hours=retention.grace_hours)
    return [Deletion(prefix + info.path, info.size, "temporary file of a write that never finished (a killed "
                     f"process), {(now - info.modified).total_seconds() / 3600:.1f} h old")
            for info in temporaries if info.modified is not None and now - info.modified > grace]


def collect_garbage(dataset: Dataset, retention: Retention, *, dry_run: bool = False,
                    on_delete: Callable[[Deletion], None] | None = None,
                    now: datetime | None = None) -> GcPlan:
    """Plan, then (unless ``dry_run``) delete; ``on_delete`` hears of each deletion as it happens."""
    pointer = dataset.require_announced()
    now = now or datetime.now(timezone.utc)
    if pointer.shard_count is None:
        chain = _chain(dataset)
        plan = plan_gc(dataset.name, pointer, chain.manifests, chain.manifest_sizes, chain.blobs, retention, now,
                       chain.temporaries)
    else:
        listed = _manifests_listed(dataset)
        manifests = {v: dataset.sharded_manifest(v) for v in sorted(listed)}
        temporaries = [info for folder in ("", f"{VERSIONS_DIR}/") for info in dataset.store.temporaries(folder)]
        shards = [_chain(dataset.shard(i, pointer.shard_count), f"{shard_dir(i)}/")
                  for i in range(pointer.shard_count)]
        plan = plan_sharded_gc(dataset.name, pointer, manifests, {v: info.size for v, info in listed.items()},
                               temporaries, shards, retention, now)
    if dry_run:
        for deletion in plan.deletions:
            if on_delete:
                on_delete(deletion)
        return plan
    _check_unmoved(dataset, pointer, plan)
    for deletion in plan.deletions:
        dataset.store.delete(deletion.path)
        log.info("%s: deleted %s (%s)", dataset.name, deletion.path, deletion.reason)
        if on_delete:
            on_delete(deletion)
    return plan


def _manifests_listed(dataset: Dataset) -> dict[int, ObjectInfo]:
    return {v: info for info in dataset.store.list(f"{VERSIONS_DIR}/")
            if (v := manifest_version(info.path)) is not None}


def _chain(dataset: Dataset, prefix: str = "") -> Chain:
    """A chain of versions as the store holds it: an unsharded dataset, or a shard (under ``prefix``)."""
    listed = _manifests_listed(dataset)
    return Chain({v: dataset.manifest(v) for v in sorted(listed)}, {v: info.size for v, info in listed.items()},
                 dataset.store.list(f"{BLOBS_DIR}/"),
                 [info for folder in ("", f"{VERSIONS_DIR}/", f"{BLOBS_DIR}/")
                  for info in dataset.store.temporaries(folder)], prefix)


def _check_unmoved(dataset: Dataset, planned: Pointer, plan: GcPlan) -> None:
    """Refuse to delete if someone pinned (or rolled back to) a version the plan removes.

    New versions published meanwhile are safe: their manifests were not in the
    listing and their blobs are younger than the grace period.
    """
    try:
        pointer = dataset.require_announced()
    except DatasetNotFound as exc:
        raise ConflictError(f"{dataset.name}: announced.json disappeared while gc was planning; nothing deleted",
                            dataset=dataset.name, version=planned.version) from exc
    stays = set(plan.manifests)
    for version in (pointer.pin, pointer.version):
        if version is not None and version <= planned.version and version not in stays:
            raise ConflictError(f"{dataset.name}: version {version} was pinned or announced while gc was planning "
                                "to delete it; nothing deleted. Run gc again.",
                                dataset=dataset.name, version=version)
