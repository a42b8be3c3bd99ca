"""Sharded datasets for consumer tests, written with the ordinary publisher: one changelog file per shard.

Each shard is published by a Publisher on ``dataset.shard(i, count)`` from a
file holding only that shard's records (by the partitioner), then the shard
heads are committed as one dataset version. This is the layout a sharded
producer writes; the producer's own tests (test_sharded_publish.py) cover
how it gets there from Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from combe.format.dataset import Dataset
from combe.format.manifest import utc_now
from combe.format.partition import partition_of
from combe.format.sharded import Sharding
from combe.format.commit import Commit, commit
from combe.producer.cycle import PublishOptions, Publisher
from combe.producer.records import RecordFormat
from combe.producer.sources import open_source
from combe.producer.validators import Limits

from .changelog import Change, append_jsonl


class ShardedWriter:
    """Publishes rounds of changes into a sharded dataset; ``publish`` returns the commit."""

    def __init__(self, store: str, name: str, count: int, folder: Path, *, key_type: str = "string",
                 signing_key: Path | None = None) -> None:
        self.dataset = Dataset.open(store, name, signing_key=signing_key)
        self.count = count
        self.key_type = key_type
        self.folder = folder
        self.sharding = self.dataset.create_sharding(Sharding(name, count, "key", key_type, utc_now(), "tests"))

    def changelog(self, shard: int) -> Path:
        return self.folder / f"{self.dataset.name}-shard-{shard}.jsonl"

    def shard_of(self, key: Any) -> int:
        return partition_of(key, self.key_type, self.count)

    def publish(self, changes: Iterable[Change], shards: Sequence[int] | None = None, *,
                tags: dict[str, str] | None = None, commit_after: bool = True) -> Commit | None:
        """Append ``changes`` to their shards' changelogs, publish ``shards`` (default: all), commit."""
        by_shard: dict[int, list[Change]] = {i: [] for i in range(self.count)}
        for key, value in changes:
            by_shard[self.shard_of(key)].append((key, value))
        for shard, part in by_shard.items():
            path = self.changelog(shard)
            path.touch()
            append_jsonl(path, part)
        for shard in range(self.count) if shards is None else shards:
            with open_source(str(self.changelog(shard))) as source:
                options = PublishOptions(fmt=RecordFormat(key_type=self.key_type), tags=tags or {},
                                         limits=Limits(max_removed=None, max_added=None))
                Publisher(self.dataset.shard(shard, self.count), source, options).run_cycle()
        return commit(self.dataset, self.sharding, producer="tests", tags=tags) if commit_after else None
