"""Committing a version of a sharded dataset: every shard's head, named in one sharded manifest, announced by CAS.

A shard's producer publishes a shard version like an unsharded version (blobs,
manifest create-only, then its shard head by compare-and-swap) and then
commits: it reads every shard head, writes a sharded manifest naming them as
the next dataset version (create-only), and swaps ``announced.json`` to it.
Nothing else coordinates the producers:

- Two producers committing at once: one creates the manifest of version v+1
  and announces it; the other's create-only write fails (or its swap does),
  it reads again and commits the heads as they are now on top of v+1. Its
  own shard heads are in v+1 already if the winner read them, else in v+2.
- A committer that stops after writing the manifest of v+1 but before
  announcing it leaves a manifest whose shard versions were all published:
  the next committer announces it first, then commits what moved since.
- A shard head that no dataset version names yet (its producer died before
  committing) is named by whoever commits next, so no published shard
  version is lost and none is applied twice: a shard version's positions
  follow its parent's, and a dataset version names one version per shard.

The first dataset version is committed once every shard has a version: a
version that left a shard out would answer its keys with silent misses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .dataset import Announced, Dataset
from .errors import ConfigError, ConflictError, DatasetNotFound, FormatError
from .manifest import Manifest, Pointer, utc_now
from .sharded import Sharding, ShardedManifest, ShardVersion, merged_schema, state_checksum

log = logging.getLogger(__name__)

# Sharded manifests a commit may find written by others before it gives up: each one is another
# producer's progress, so only many producers committing at once ever reach it.
COMMIT_ATTEMPTS = 32


@dataclass(frozen=True)
class Commit:
    """What a commit found and did.

    ``outcome``: ``committed`` (this call announced ``version``), ``current``
    (the announced version already names every shard head), or ``pending``
    (the shards in ``pending`` have no version yet: nothing is announced
    before every shard has one). ``version`` is the dataset version announced
    after the call (None before the first); ``adopted`` lists versions a
    committer wrote and did not announce, announced by this call.
    """

    outcome: str
    version: int | None
    pending: tuple[int, ...] = ()
    adopted: tuple[int, ...] = ()


def check_sharded(dataset: Dataset, pointer: Pointer | None, sharding: Sharding) -> None:
    """Refuse an announcement that is not this sharding's: an unsharded dataset, or another shard count."""
    if pointer is None:
        return
    if pointer.shard_count is None:
        raise ConfigError(f"dataset {dataset.name!r} at {dataset.url} was published unsharded; it cannot take "
                          "shards (publish a sharded dataset under another name)")
    if pointer.shard_count != sharding.shard_count:
        raise FormatError(f"{dataset.url}: announced.json says {pointer.shard_count} shards, shards.json "
                          f"{sharding.shard_count}", path="announced.json")


def commit(dataset: Dataset, sharding: Sharding, *, producer: str, tags: Mapping[str, str] | None = None,
           attempts: int = COMMIT_ATTEMPTS, clock: Callable[[], str] = utc_now) -> Commit:
    """Announce a dataset version naming every shard's head, unless the announced one does already.

    ``clock`` gives the documents' times (PublishOptions.clock's role: the conformance corpus fixes them)."""
    adopted: list[int] = []
    for _ in range(attempts):
        announced = dataset.announced()
        pointer = announced.pointer
        check_sharded(dataset, pointer, sharding)
        current = dataset.sharded_manifest(pointer.version) if pointer else None
        following = (pointer.version if pointer else 0) + 1
        waiting = _written(dataset, following)
        if waiting is not None:
            if waiting.parent != (pointer.version if pointer else None):
                raise FormatError(f"{dataset.url}: version {following} was written on version {waiting.parent}, "
                                  f"but version {pointer.version if pointer else None} is announced")
            if _announce(dataset, announced, waiting.version, sharding, producer, clock) is not None:
                log.info("%s: announced version %d, written by %s, which stopped before announcing it",
                         dataset.name, waiting.version, waiting.producer)
                adopted.append(waiting.version)
            continue
        heads = [dataset.shard(i, sharding.shard_count).announced().pointer for i in range(sharding.shard_count)]
        pending = tuple(i for i, head in enumerate(heads) if head is None)
        if pending:
            return Commit("pending", pointer.version if pointer else None, pending, tuple(adopted))
        versions = [head.version for head in heads if head is not None]
        if current is not None:
            if versions == current.shard_versions:
                return Commit("current", current.version, (), tuple(adopted))
            behind = [i for i, (v, c) in enumerate(zip(versions, current.shard_versions)) if v < c]
            if behind:
                raise FormatError(f"{dataset.url}: the heads of shards {behind} are behind the versions the "
                                  f"announced version {current.version} names; a shard head never moves back")
        manifest = _next(dataset, sharding, current, versions, following, producer, tags or {}, clock)
        if not dataset.create_sharded_manifest(manifest):
            continue  # another committer wrote version ``following`` first: adopt or build on it
        if _announce(dataset, announced, following, sharding, producer, clock) is None:
            continue  # the announcement moved (a pin, or a committer that adopted ours): read it again
        log.info("%s: version %d commits shard versions %s", dataset.name, following, versions)
        return Commit("committed", following, (), tuple(adopted))
    raise ConflictError(f"{dataset.name}: other producers kept committing versions ({attempts} attempts); the shard "
                        "versions published stay at their shards' heads and the next commit names them",
                        dataset=dataset.name, version=0)


def _written(dataset: Dataset, version: int) -> ShardedManifest | None:
    try:
        return dataset.sharded_manifest(version)
    except DatasetNotFound:
        return None


def _announce(dataset: Dataset, announced: Announced, version: int, sharding: Sharding, producer: str,
              clock: Callable[[], str]) -> str | None:
    """Swap the announcement to ``version``, carrying the store-wide pin over."""
    pin = announced.pointer.pin if announced.pointer else None
    pointer = Pointer(dataset.name, version, clock(), producer, pin, sharding.shard_count)
    return dataset.announce(pointer, announced.tag)


def _next(dataset: Dataset, sharding: Sharding, current: ShardedManifest | None, versions: list[int],
          version: int, producer: str, tags: Mapping[str, str],
          clock: Callable[[], str] = utc_now) -> ShardedManifest:
    """The sharded manifest naming ``versions`` as ``version``, checked shard by shard."""
    changed = {i: v for i, v in enumerate(versions) if current is None or v != current.shard_versions[i]}
    manifests = {i: dataset.shard(i, sharding.shard_count).manifest(v) for i, v in changed.items()}
    value_formats = {m.value_format for m in manifests.values()} | ({current.value_format} if current else set())
    for i, manifest in manifests.items():  # Dataset.manifest checked they are these shards'
        if (manifest.schema.key_field, manifest.schema.key_type) != (sharding.key_field, sharding.key_type):
            raise ConfigError(f"{dataset.label} shard {i} has key {manifest.schema.key_field} "
                              f"({manifest.schema.key_type}); the dataset's is {sharding.key_field} "
                              f"({sharding.key_type})")
    if len(value_formats) > 1:
        raise ConfigError(f"the shards of {dataset.name} were published with different value formats: "
                          f"{sorted(value_formats)}")
    ordered = [manifests[i].schema for i in sorted(manifests)]
    try:
        schema = merged_schema(ordered, current.schema if current else None)
    except ConfigError as exc:
        # Each shard infers its columns from its own records: one whose records held only integers has an int64
        # column where another's held a fraction. Neither can be made to read as the other afterwards (int64 does
        # not grow into float64), so the way out is a schema declared for every shard (README, "Publishing a
        # sharded dataset").
        raise ConfigError(f"{dataset.name}: the shard versions cannot be committed together: {exc} (each shard "
                          "infers its columns from its own records). Declare one schema for every shard's producer; a "
                          "shard that already holds the column in a type that cannot grow into the declared one "
                          "needs publishing again under a new dataset name") from exc
    shards = tuple(_part(manifests[i]) if i in manifests else current.shards[i]  # type: ignore[union-attr]
                   for i in range(sharding.shard_count))
    return ShardedManifest(
        dataset=dataset.name, version=version, parent=current.version if current else None, created_at=clock(),
        producer=producer, schema=schema, value_format=value_formats.pop(),
        record_count=sum(s.record_count for s in shards), state_checksum=state_checksum([s.state_checksum
                                                                                         for s in shards]),
        shards=shards, tags=dict(tags))


def _part(manifest: Manifest) -> ShardVersion:
    return ShardVersion(manifest.version, manifest.record_count, manifest.state_checksum)
