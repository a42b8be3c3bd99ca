"""Crashes around a Kafka publish: the producer SIGKILLed mid-read, after its blobs, or after its manifest,
and the broker killed mid-read. The next run must publish exactly the topic's state: nothing lost, nothing
folded twice, never a partly read version."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from combe.format.dataset import Dataset
from combe.format.errors import SourceError
from combe.producer import Publisher
from combe.producer.sources.kafka import KafkaSource
from tests.support.kafka_broker import KafkaBroker
from tests.support.kafka_data import RESUMABLE, end_offsets, produce, published, random_changes, replay, unique

pytestmark = pytest.mark.kafka

# `combe publish` with one step replaced by SIGKILL to itself: a crash at a precise point of the cycle.
CRASHING_PUBLISH = """
import os, signal, sys
from combe.cli import main
from combe.format.dataset import Dataset
from combe.producer.sources.kafka import KafkaSource

def crash(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

point = sys.argv[1]
if point == "read":
    fetch = KafkaSource._fetch
    def fetch_then_crash(self, *args):
        for batch in fetch(self, *args):
            yield batch
            crash()  # the first batch is folded, the rest of the topic unread
    KafkaSource._fetch = fetch_then_crash
elif point == "blobs":
    Dataset.create_manifest = crash  # blobs written and checked, no manifest yet
elif point == "manifest":
    Dataset.announce = crash  # manifest written, not announced
sys.exit(main(sys.argv[2:]))
"""


def _publish_command(broker: KafkaBroker, topic: str, store: Path,
                     crash_at: str = "") -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", CRASHING_PUBLISH, crash_at, "publish", "--once", "--source",
            f"kafka://{broker.bootstrap}/{topic}", "--store", str(store), "--dataset", "ds"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _publish(broker: KafkaBroker, topic: str, dataset: Dataset) -> None:
    with KafkaSource(f"kafka://{broker.bootstrap}/{topic}", dataset=dataset.name, timeout=10) as source:
        Publisher(dataset, source).run_cycle()


@pytest.mark.parametrize("crash_at", ["read", "blobs", "manifest"])
def test_a_producer_killed_mid_cycle_is_finished_exactly_by_the_next_run(kafka_broker: KafkaBroker,
                                                                          tmp_path: Path, crash_at: str) -> None:
    topic = unique(f"crash-{crash_at}")
    kafka_broker.create_topic(topic, partitions=3, config=RESUMABLE)
    store = tmp_path / "store"
    dataset = Dataset.open(str(store), "ds")
    rng = random.Random(11)
    # One key space throughout, so no version trips the default added/removed-share validators.
    rounds = [random_changes(4000, 3000, rng, tombstones=0.05)]
    produce(kafka_broker.bootstrap, topic, rounds[0])
    _publish(kafka_broker, topic, dataset)
    # Large enough to take several batches, so "read" dies with most of it unread.
    rounds.append(random_changes(25_000, 3000, rng))
    produce(kafka_broker.bootstrap, topic, rounds[1])

    crashed = _publish_command(kafka_broker, topic, store, crash_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert dataset.announced().version == 1
    blobs = list((store / "ds" / "blobs").iterdir())
    assert len(blobs) > 1 if crash_at != "read" else len(blobs) == 1  # only version 1's snapshot
    assert (2 in dataset.versions()) == (crash_at == "manifest")

    rerun = _publish_command(kafka_broker, topic, store)
    assert rerun.returncode == 0, rerun.stderr
    assert dataset.announced().version == 2
    assert published(dataset) == replay(*rounds)
    manifest = dataset.manifest(2)
    assert manifest.changes["messages"] == 25_000  # round two, each message once
    assert manifest.positions == {topic: end_offsets(kafka_broker.bootstrap, topic, 3)}

    rounds.append(random_changes(300, 3000, rng))
    produce(kafka_broker.bootstrap, topic, rounds[2])
    _publish(kafka_broker, topic, dataset)
    assert dataset.announced().version == 3
    assert dataset.manifest(3).changes["messages"] == 300
    assert published(dataset) == replay(*rounds)


def test_a_broker_killed_mid_read_never_gets_partial_data_announced(tmp_path: Path) -> None:
    """Its own broker: this one is killed. Small fetches keep the client from holding the topic in advance."""
    with KafkaBroker() as broker:
        topic = unique("broker-dies")
        broker.create_topic(topic, partitions=3, config=RESUMABLE)
        changes = random_changes(20_000, 2000, random.Random(13))
        produce(broker.bootstrap, topic, changes)
        ends = end_offsets(broker.bootstrap, topic, 3)
        dataset = Dataset.open(str(tmp_path / "store"), "ds")
        small_fetches = {"message.max.bytes": "20000", "fetch.max.bytes": "20000",
                         "max.partition.fetch.bytes": "8000", "queued.max.messages.kbytes": "16"}
        url = f"kafka://{broker.bootstrap}/{topic}"

        def kill_broker(messages: int) -> None:
            if broker._process is not None and broker._process.poll() is None:
                broker.kill()

        # The source's own clients ask for the partitions' offsets before the read: on a loaded machine a broker
        # just started can take longer than the 3 s timeout to answer a new client. That happens before any
        # message, with the broker alive, and is not the case under test: the cycle is run again, with a
        # deadline, until the broker died mid-read.
        deadline = time.monotonic() + 60
        while True:
            started = time.monotonic()
            with KafkaSource(url, dataset="ds", client_config=small_fetches, timeout=3,
                             batch_messages=500) as source:
                try:
                    result = Publisher(dataset, source, on_progress=kill_broker).run_cycle()
                except SourceError as exc:
                    assert dataset.announced().version is None
                    if broker._process is not None and broker._process.poll() is None:
                        assert "cannot reach Kafka" in str(exc) and time.monotonic() < deadline, exc
                        continue
                    assert "no data from Kafka" in str(exc)
                else:  # everything had been fetched before the broker died: then it must all be there
                    assert result.messages == 20_000
                    assert published(dataset) == replay(changes)
            break
        assert time.monotonic() - started < 30

        broker.restart()
        with KafkaSource(url, dataset="ds", timeout=10) as source:
            Publisher(dataset, source).run_cycle()
        assert dataset.announced().version == 1
        assert published(dataset) == replay(changes)
        assert dataset.manifest(1).positions == {topic: ends}
