"""How fast the producer folds a Kafka topic, against a bare confluent-kafka consume loop over the same topic.

    python bench/kafka_fold.py [--messages 200000] [--runs 5] [--bootstrap HOST:PORT]

The fold is one whole ``Publisher.run_cycle()`` into an empty store, as
``combe publish --once`` runs it: read every partition up to its start
watermark, decode the JSON values, fold, write and check the snapshot,
announce. Its rate is the topic's messages over those seconds; the read phase
alone (up to the last batch handed to the fold) is reported beside it. The
bare loop assigns every partition from the beginning, consumes in batches
until each partition reports its end, and keeps the latest value of each key
in a dict, as a read service replaying the topic would (it used to only touch
each key and value, less than any user of the messages does). The two
run back to back, run after run, with the same client settings; the ratio is
taken pair by pair, so a slow spell on a noisy machine hits both sides.
Without ``--bootstrap`` a broker is started from the test jars
(tests/support/kafka_broker.py, needs Java 17 and Maven).

Goal (issue 11, was 60% in issue 3): the fold's rate is at least 80% of the bare loop's, whether keys
repeat or not.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from combe.format.dataset import Dataset
from combe.producer import Publisher, open_source

GOAL = 0.80
BATCH = 10_000
# The broker holds a fetch at the end of a partition for fetch.wait.max.ms (default 500 ms) before the
# end-of-partition event comes; both readers use this setting so neither pays that wait at the end.
CLIENT_SETTINGS = {"fetch.wait.max.ms": "10"}
# Compacted, with ordinary segments: a busy log cleaner would compete with the readers for the CPU.
TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.bytes": str(256 << 20), "segment.ms": str(7 * 86_400_000)}
WORDS = "amber basalt cedar delta ember fern garnet harbor indigo jade maple onyx quartz raven slate tundra".split()


@dataclass
class Comparison:
    """Rates in messages per second, one value per run; ``ratios`` is fold / raw, pair by pair."""

    messages: int
    fold: list[float] = field(default_factory=list)
    fold_read: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [f / r for f, r in zip(self.fold, self.raw)]

    def summary(self) -> dict[str, float | int | bool]:
        ratio = statistics.median(self.ratios)
        return {"messages": self.messages, "runs": len(self.fold),
                "fold_messages_per_s": statistics.median(self.fold),
                "fold_read_phase_messages_per_s": statistics.median(self.fold_read),
                "raw_consume_messages_per_s": statistics.median(self.raw),
                "fold_fraction_of_raw": ratio, "goal": GOAL, "met": ratio >= GOAL}


def produce_topic(bootstrap: str, topic: str, messages: int, partitions: int = 3, seed: int = 7) -> None:
    """A compacted topic of ``messages`` product-like JSON records over messages/4 keys, 5% tombstones."""
    admin = AdminClient({"bootstrap.servers": bootstrap})  # held: a collected client cancels its futures
    admin.create_topics([NewTopic(topic, partitions, 1, config=TOPIC_CONFIG)])[topic].result(timeout=30)
    rng = random.Random(seed)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 500_000})
    keys = max(messages // 4, 1)
    for i in range(messages):
        key = f"sku-{rng.randrange(keys):09d}"
        value = None if rng.random() < 0.05 else json.dumps({
            "name": " ".join(rng.choices(WORDS, k=3)), "category": f"category-{rng.randrange(24):02d}",
            "price": round(rng.lognormvariate(3.0, 1.0), 2), "stock": rng.randrange(10_000),
            "active": rng.random() < 0.9, "rating": round(rng.uniform(1, 5), 1),
            "tags": rng.sample(WORDS, rng.randrange(4)), "updated_at": 1_700_000_000_000 + i,
        }, separators=(",", ":"))
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
    if producer.flush(120):
        raise RuntimeError(f"producing {topic}: messages still queued after 120 s")


def raw_consume(bootstrap: str, topic: str) -> int:
    """The bare loop a read service would write: the latest value of each key in a dict (a tombstone removes
    it), as the fold keeps them; the number of messages it read."""
    consumer = Consumer({**CLIENT_SETTINGS, "bootstrap.servers": bootstrap, "group.id": "bench-raw",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        pending = set(partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        count = 0
        latest: dict[bytes | None, bytes] = {}
        while pending:
            for message in consumer.consume(BATCH, 0.1):
                error = message.error()
                if error is None:
                    value = message.value()
                    if value is None:
                        latest.pop(message.key(), None)
                    else:
                        latest[message.key()] = value
                    count += 1
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                else:
                    raise RuntimeError(f"consuming {topic}: {error}")
        return count
    finally:
        consumer.close()


def fold_once(bootstrap: str, topic: str, store: Path) -> tuple[int, float, float]:
    """One publish cycle into an empty store: (messages, seconds in all, seconds until the read ended)."""
    last_batch = [0.0]

    def progress(_messages: int) -> None:
        last_batch[0] = time.perf_counter()

    with open_source(f"kafka://{bootstrap}/{topic}", dataset="bench", client_config=CLIENT_SETTINGS) as source:
        publisher = Publisher(Dataset.open(str(store), "bench"), source, on_progress=progress)
        started = time.perf_counter()
        result = publisher.run_cycle()
        seconds = time.perf_counter() - started
    return result.messages, seconds, last_batch[0] - started


def compare(bootstrap: str, topic: str, messages: int, runs: int, workdir: Path) -> Comparison:
    """Raw loop and fold, ``runs`` pairs back to back over a topic holding ``messages`` messages."""
    comparison = Comparison(messages)
    for run in range(runs):
        started = time.perf_counter()
        count = raw_consume(bootstrap, topic)
        comparison.raw.append(count / (time.perf_counter() - started))
        store = workdir / f"fold-{run}"
        folded, seconds, read_seconds = fold_once(bootstrap, topic, store)
        shutil.rmtree(store, ignore_errors=True)
        if count != messages or folded != messages:
            raise AssertionError(f"raw loop read {count}, fold {folded}; the topic holds {messages}")
        comparison.fold.append(folded / seconds)
        comparison.fold_read.append(folded / read_seconds)
    return comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--bootstrap", help="an existing broker (default: start one from the test jars)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        bootstrap = args.bootstrap
        if bootstrap is None:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.support.kafka_broker import KafkaBroker

            bootstrap = stack.enter_context(KafkaBroker()).bootstrap
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="combe-bench-")))
        topic = f"bench-fold-{args.messages}-{int(time.time())}"
        produce_topic(bootstrap, topic, args.messages, args.partitions)
        summary = compare(bootstrap, topic, args.messages, args.runs, workdir).summary()
    if args.json:
        print(json.dumps(summary))
    else:
        for name, value in summary.items():
            print(f"{name:32} {value:,.3f}" if isinstance(value, float) else f"{name:32} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
