"""Publishing a sharded dataset: a cycle for each shard held, then one commit of every shard's head.

A process holds some of the shards (``combe publish --shards 0-3``). For each
it runs an ordinary Publisher on that shard's chain of versions
(``Dataset.shard``) from a source of that shard's records (a Kafka source
reads the shard's partitions only; a file source is read whole and the
other shards' records are passed over), so every shard keeps its own
positions and, in a daemon, its own state between cycles. Then it commits
(format/commit.py): the next dataset version names every shard's head, by
compare-and-swap of ``announced.json``.

Processes that hold disjoint shards need nothing else to work together, on
one machine or several, and none of them loses or doubles a record:

- A shard version is announced at its shard's head by compare-and-swap from
  its parent, and its source positions follow its parent's; so a record is
  folded into exactly one version of its shard.
- A process killed mid-cycle leaves at most a shard manifest not yet
  announced at its head (its restart announces it before reading on, as an
  unsharded producer does) or a shard head no dataset version names yet
  (whoever commits next names it).
- Two commits at once: one wins the next dataset version, the other reads
  again and commits on top of it (format/commit.py), so neither loses the
  other's shard versions.
- Two processes given the same shard by mistake race on its head: one wins,
  the other's cycle fails with ConflictError and announces nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from combe.format.commit import Commit, check_sharded, commit
from combe.format.dataset import Dataset
from combe.format.errors import CombeError, ConfigError
from combe.format.keys import check_shardable
from combe.format.partition import check_shard_count
from combe.format.sharded import Sharding

from .cycle import CycleResult, PublishOptions, Publisher
from .records import RecordFormat
from .sources.base import Source

log = logging.getLogger(__name__)


def open_sharding(dataset: Dataset, shard_count: int | None, fmt: RecordFormat, producer: str,
                  clock: Callable[[], str]) -> Sharding:
    """How ``dataset`` is sharded: created with ``shard_count`` shards if it is new, else read and checked.

    The shard count and the key are fixed when ``shards.json`` is written
    (create-only: of two producers creating it at once, both get the first
    one's); a later run that asks for another count or key is refused.
    """
    sharding = dataset.sharding()
    if sharding is None:
        if shard_count is None:
            raise ConfigError(f"dataset {dataset.name!r} at {dataset.url} is not sharded yet: give its shard_count "
                              "to create it")
        pointer = dataset.announced().pointer
        if pointer is not None and pointer.shard_count is None:
            raise ConfigError(f"dataset {dataset.name!r} at {dataset.url} was published unsharded; it cannot take "
                              "shards (publish a sharded dataset under another name)")
        check_shardable(dataset.name, fmt.key_type)
        sharding = dataset.create_sharding(Sharding(dataset.name, check_shard_count(shard_count),
                                                    fmt.key_field, fmt.key_type, clock(), producer))
    if shard_count is not None and shard_count != sharding.shard_count:
        raise ConfigError(f"dataset {dataset.name!r} has {sharding.shard_count} shards (shards.json, fixed when it "
                          f"was created); this run asks for {shard_count}")
    if (sharding.key_field, sharding.key_type) != (fmt.key_field, fmt.key_type):
        raise ConfigError(f"dataset {dataset.name!r} is keyed by {sharding.key_field} ({sharding.key_type}) "
                          f"(shards.json); this run asks for {fmt.key_field} ({fmt.key_type})")
    check_sharded(dataset, dataset.announced().pointer, sharding)
    return sharding


@dataclass
class ShardedCycleResult(CycleResult):
    """One cycle of the shards held and the commit after it; the counts are the shards' sums.

    ``outcome``: ``pending`` when some shard of the dataset has no version
    yet (nothing is announced before every shard has one), else
    ``published`` when a shard published a version or the commit announced
    one, ``adopted`` when only versions left by a stopped producer were
    announced, ``noop`` otherwise. ``version`` is the dataset version
    announced after the commit (None before the first).
    """

    shards: dict[int, CycleResult] = field(default_factory=dict)
    commit: str = "current"  # format/commit.py Commit.outcome
    pending: tuple[int, ...] = ()

    @classmethod
    def of(cls, shards: dict[int, CycleResult], done: Commit, seconds: float) -> ShardedCycleResult:
        outcomes = {result.outcome for result in shards.values()}
        if done.outcome == "pending":
            outcome = "pending"
        elif "published" in outcomes or done.outcome == "committed" and not done.adopted:
            outcome = "published"
        elif "adopted" in outcomes or done.adopted or done.outcome == "committed":
            outcome = "adopted"
        else:
            outcome = "noop"
        results = list(shards.values())
        return cls(outcome, done.version, sum(r.messages for r in results), sum(r.bad_records for r in results),
                   sum(r.added for r in results), sum(r.updated for r in results), sum(r.removed for r in results),
                   sum(r.bytes_written for r in results), any(r.snapshot for r in results), seconds,
                   any(r.schema_change for r in results), any(r.rebuilt for r in results), None,
                   shards=shards, commit=done.outcome, pending=done.pending)


class ShardedPublisher:
    """Publishes the shards ``shards`` of a sharded dataset, each from its own source, and commits them.

    ``sources(i)`` opens shard i's source; the publisher closes them. With a
    ``cache_dir``, each shard keeps its blobs in a folder of its own in it.
    """

    def __init__(self, dataset: Dataset, sharding: Sharding, shards: Sequence[int],
                 sources: Callable[[int], Source], options: PublishOptions | None = None,
                 on_progress: Callable[[int], None] | None = None) -> None:
        dataset.store.check_publishable()
        held = tuple(sorted({sharding.check(shard) for shard in shards}))
        if not held:
            raise ConfigError(f"dataset {dataset.name!r}: give one or more of its shards, 0 to "
                              f"{sharding.shard_count - 1}")
        self.dataset = dataset
        self.sharding = sharding
        self.options = options or PublishOptions()
        self.on_progress = on_progress
        self.publishers: dict[int, Publisher] = {}
        try:
            for shard in held:
                source = sources(shard)
                try:
                    self.publishers[shard] = Publisher(dataset.shard(shard, sharding.shard_count), source,
                                                       self._shard_options(shard), on_progress)
                except BaseException:
                    source.close()
                    raise
        except BaseException:
            self.close()
            raise

    @property
    def shards(self) -> tuple[int, ...]:
        return tuple(self.publishers)

    def _shard_options(self, shard: int) -> PublishOptions:
        # A cache folder per shard: each shard's BlobCache evicts whatever its own state does not need.
        if self.options.cache_dir is None:
            return self.options
        return replace(self.options, cache_dir=Path(self.options.cache_dir) / f"shard-{shard}")

    def run_cycle(self) -> ShardedCycleResult:
        """A cycle of every shard held, then a commit, even if a shard's cycle failed: the versions the
        others published are committed, and the first failure is raised after."""
        started = time.monotonic()
        results: dict[int, CycleResult] = {}
        failure: CombeError | None = None
        for shard, publisher in self.publishers.items():
            try:
                results[shard] = publisher.run_cycle()
            except CombeError as exc:
                log.error("%s: %s", publisher.dataset.label, exc)
                failure = failure or exc
        done = commit(self.dataset, self.sharding, producer=self.options.producer_id, tags=self.options.tags,
                      clock=self.options.clock)
        if failure is not None:
            raise failure
        return ShardedCycleResult.of(results, done, time.monotonic() - started)

    def close(self) -> None:
        for publisher in self.publishers.values():
            publisher.source.close()

    def __enter__(self) -> ShardedPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
