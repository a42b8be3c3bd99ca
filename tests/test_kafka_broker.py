"""The real Kafka broker of tests/support behaves as combe relies on: keyed messages and
tombstones round-trip, read_committed hides aborted transactions, and compaction runs."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer

from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.kafka


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _text(data: str | bytes | None) -> str | None:
    return data.decode() if isinstance(data, bytes) else data


def _produce(producer: Producer, topic: str, records: list[tuple[str, str | None]]) -> None:
    """Produce and wait for every delivery, failing on the first delivery error."""
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            errors.append(error)

    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert not errors


def _read_all(
    broker: KafkaBroker, topic: str, isolation: str = "read_uncommitted", timeout: float = 30.0
) -> list[Message]:
    """Every message of the topic, read through a consumer group until each partition's end."""
    partitions = len(broker.admin().list_topics(topic=topic, timeout=10).topics[topic].partitions)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": _unique("reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    messages: list[Message] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        consumer.subscribe([topic])
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"{topic}: only {sorted(at_end)} read to the end"
            message = consumer.poll(0.5)
            if message is None:
                continue
            error, partition = message.error(), message.partition()
            assert partition is not None
            if error is None:
                messages.append(message)
                at_end.discard(partition)
            elif error.code() == KafkaError._PARTITION_EOF:
                at_end.add(partition)
            else:
                raise AssertionError(f"consumer error: {error}")
    finally:
        consumer.close()
    return messages


def test_keyed_messages_and_tombstones_round_trip(kafka_broker: KafkaBroker) -> None:
    topic = _unique("roundtrip")
    # One long-lived segment, so the cleaner cannot compact anything away before we read it back.
    kafka_broker.create_topic(topic, partitions=3, config={"segment.ms": "3600000"})
    records: list[tuple[str, str | None]] = [(f"key-{i % 10}", f"value-{i}") for i in range(40)]
    records += [(f"key-{i}", None) for i in range(0, 10, 3)]
    _produce(Producer({"bootstrap.servers": kafka_broker.bootstrap}), topic, records)

    messages = _read_all(kafka_broker, topic)

    assert {m.partition() for m in messages} == {0, 1, 2}
    received: dict[str | None, list[str | None]] = {}
    for message in messages:
        received.setdefault(_text(message.key()), []).append(_text(message.value()))
    expected: dict[str | None, list[str | None]] = {}
    for key, value in records:
        expected.setdefault(key, []).append(value)
    assert received == expected  # same messages, each key's history in produce order


def test_read_committed_sees_only_committed_transactions(kafka_broker: KafkaBroker) -> None:
    topic = _unique("txn")
    # The cleaner drops aborted records, which would void the read_uncommitted check below.
    kafka_broker.create_topic(topic, partitions=3, config={"segment.ms": "3600000"})
    producer = Producer(
        {"bootstrap.servers": kafka_broker.bootstrap, "transactional.id": _unique("txn")}
    )
    producer.init_transactions(30)

    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, key=f"key-{i}", value=f"aborted-{i}")
    producer.flush(30)  # the aborted records reach the log before the abort marker
    producer.abort_transaction(30)

    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, key=f"key-{i}", value=f"committed-{i}")
    producer.commit_transaction(30)

    committed = _read_all(kafka_broker, topic, isolation="read_committed")
    everything = _read_all(kafka_broker, topic, isolation="read_uncommitted")

    assert sorted(str(_text(m.value())) for m in committed) == [f"committed-{i}" for i in range(5)]
    # The aborted records did reach the log: read_committed filtered them out.
    assert sorted(str(_text(m.value())) for m in everything) == sorted(
        [f"aborted-{i}" for i in range(5)] + [f"committed-{i}" for i in range(5)]
    )


def test_compacted_topic_is_compacted_within_seconds(kafka_broker: KafkaBroker) -> None:
    topic = _unique("compact")
    kafka_broker.create_topic(topic, partitions=1)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "linger.ms": 0})
    _produce(producer, topic, [("hot", f"v{i}") for i in range(20)])
    deadline = time.monotonic() + 30
    while True:
        # Rolls the segment holding the old values (the active segment is never cleaned).
        time.sleep(0.2)
        _produce(producer, topic, [("roll", "x")])
        hot = [m.value() for m in _read_all(kafka_broker, topic) if m.key() == b"hot"]
        if hot == [b"v19"]:
            return
        assert time.monotonic() < deadline, f"not compacted after 30 s: {len(hot)} 'hot' left"
