"""The alternative combe replaces: replay the compacted topic from the broker into a dict.

Also the producer that writes the dataset into the topic. Everything here is
plain confluent-kafka, written the way a read service would write it: assign
every partition from the beginning, read in batches until every partition
reports its end, ``json.loads`` each value, keep the latest value per key,
drop tombstoned keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from .data import Change
from .kafka_fold import CLIENT_SETTINGS  # the fold's readers' tuning: no 500 ms wait at the end either

BATCH = 10_000
# Since confluent-kafka 2.13 consume() waits until it has BATCH messages or the timeout passes, so the
# last call of a read waits this long; keep it short.
TIMEOUT = 0.05


def produce(bootstrap: str, topic: str, items: Iterable[Change], partitioner: str | None = None) -> int:
    """Write ``items`` as keyed JSON messages (None -> tombstone); the number written. ``partitioner`` is
    librdkafka's (``murmur2_random``: the Java client's default, which sharded datasets rely on)."""
    settings = {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                "queue.buffering.max.messages": 500_000}
    if partitioner is not None:
        settings["partitioner"] = partitioner
    producer = Producer(settings)
    errors: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            errors.append(error)

    count = 0
    for key, value in items:
        payload = None if value is None else json.dumps(value, separators=(",", ":")).encode()
        while True:
            try:
                producer.produce(topic, key=str(key).encode(), value=payload, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) or errors:
        raise RuntimeError(f"producing to {topic} failed: {errors[:3] or 'messages still queued after 120 s'}")
    return count


class TopicReader:
    """Every partition of a topic from its beginning until each reports its end (partition EOF).

    Callers loop over ``batches()`` and hand any message carrying an error to
    ``error()``: the EOF markers end the read, anything else is raised.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer({**CLIENT_SETTINGS, "bootstrap.servers": bootstrap, "group.id": "combe-bench",
                                  "enable.auto.commit": False, "enable.partition.eof": True})
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.pending = set(partitions)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def batches(self) -> Iterator[list[Message]]:
        try:
            while self.pending:
                yield self.consumer.consume(BATCH, timeout=TIMEOUT)
        finally:
            self.consumer.close()

    def error(self, message: Message) -> None:
        error = message.error()
        if error is not None and error.code() == KafkaError._PARTITION_EOF:
            self.pending.discard(message.partition())
            return
        raise RuntimeError(f"consuming {self.topic}: {error}")


def replay_into_dict(bootstrap: str, topic: str, key_type: str) -> dict[str | int, dict]:
    """What a read service does today at start-up: the whole topic folded into a dict of dicts."""
    state: dict[str | int, dict] = {}
    int_keys = key_type == "int64"
    reader = TopicReader(bootstrap, topic)
    for batch in reader.batches():
        for message in batch:
            if message.error() is not None:
                reader.error(message)
                continue
            raw = message.key() or b""  # the benchmark's topic keys every message
            key = int(raw) if int_keys else raw.decode()
            value = message.value()
            if value is None:
                state.pop(key, None)
            else:
                state[key] = json.loads(value)
    return state
