"""Test data for the Kafka source: produce keyed JSON records, replay them into a dict independently of
combe, and read back what a dataset holds, so tests compare the published state with the replay."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from combe.format.dataset import Dataset
from combe.producer.state import load_state

# delete.retention.ms far beyond any test, for tests that resume: the broker fixture's compacted-topic
# default (100 ms) would make every resumed position "older than delete.retention.ms".
RESUMABLE = {"delete.retention.ms": str(3600 * 1000)}

Change = tuple[str, dict[str, Any] | None]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def random_changes(count: int, keys: int, rng: random.Random, tombstones: float = 0.2,
                   prefix: str = "k") -> list[Change]:
    """``count`` updates of ``keys`` keys, roughly ``tombstones`` of them deletes."""
    changes: list[Change] = []
    for i in range(count):
        key = f"{prefix}{rng.randrange(keys)}"
        changes.append((key, None if rng.random() < tombstones else {"n": rng.randrange(1000), "s": f"v{i}"}))
    return changes


def produce(bootstrap: str, topic: str, changes: Iterable[Change], partition: int | None = None,
            idempotent: bool = True, partitioner: str | None = None) -> None:
    """Produce JSON values (None: a tombstone) and wait for every delivery.

    Idempotent by default, so retries keep each key's order. Not for topics a test wants fully compacted:
    the log cleaner keeps the last batch of every idempotent producer id. ``partitioner`` is librdkafka's
    (``murmur2_random``: the Java client's default, which sharded datasets rely on).
    """
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            errors.append(error)

    settings: dict[str, Any] = {"bootstrap.servers": bootstrap, "enable.idempotence": idempotent, "linger.ms": 5}
    if partitioner is not None:
        settings["partitioner"] = partitioner
    producer = Producer(settings)
    for key, value in changes:
        payload = None if value is None else json.dumps(value)
        if partition is None:
            producer.produce(topic, key=key, value=payload, on_delivery=on_delivery)
        else:
            producer.produce(topic, key=key, value=payload, partition=partition, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors


def produce_raw(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]) -> None:
    """Message keys and values as given, bytes and all, to partition 0: for keys and values no Change can spell."""
    errors: list[object] = []
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in messages:
        producer.produce(topic, key=key, value=value, partition=0,
                         on_delivery=lambda error, _: errors.append(error) if error else None)
    assert producer.flush(30) == 0 and not errors, errors


def replay(*rounds: Iterable[Change]) -> dict[str, dict[str, Any]]:
    """The state a compacted topic stands for: the latest value per key, deletes applied."""
    state: dict[str, dict[str, Any]] = {}
    for changes in rounds:
        for key, value in changes:
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
    return state


def published(dataset: Dataset) -> dict[str, dict[str, Any]]:
    """The announced state, key -> value fields (null fields left out, as the replay has none)."""
    version = dataset.announced().version
    if version is None:
        return {}
    manifest = dataset.manifest(version)
    key_field = manifest.schema.key_field
    return {row.pop(key_field): {k: v for k, v in row.items() if v is not None}
            for row in load_state(dataset, manifest).table().to_pylist()}


def end_offsets(bootstrap: str, topic: str, partitions: int, committed: bool = True) -> dict[str, int]:
    """Each partition's end (last stable offset when ``committed``), as a manifest records positions."""
    from confluent_kafka import IsolationLevel

    admin = AdminClient({"bootstrap.servers": bootstrap})
    isolation = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    futures = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)},
                                 isolation_level=isolation, request_timeout=10)
    return {str(tp.partition): future.result(timeout=15).offset for tp, future in futures.items()}


def group_offsets(bootstrap: str, group: str) -> dict[str, dict[str, int]]:
    """What a consumer group has committed, shaped like manifest positions."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=10)[group]
    found: dict[str, dict[str, int]] = {}
    for tp in future.result(timeout=15).topic_partitions:
        if tp.offset >= 0:
            found.setdefault(tp.topic, {})[str(tp.partition)] = tp.offset
    return found
