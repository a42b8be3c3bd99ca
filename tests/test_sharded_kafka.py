"""Sharded publishing from Kafka with real processes on the real broker: `combe publish --shards` processes on
disjoint shards, one SIGKILLed mid-cycle; its restart must finish exactly, so that a consumer of the whole
dataset holds what a dict replay of the topic holds (no record lost, none folded twice)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.partition import partition_of
from tests.support.changelog import canon, replay
from tests.support.kafka_broker import KafkaBroker
from tests.support.kafka_data import RESUMABLE, end_offsets, produce, random_changes, unique

pytestmark = pytest.mark.kafka

MURMUR2 = "murmur2_random"  # librdkafka's name for the Java client's default partitioner

# `combe publish` with one step replaced by SIGKILL to itself: a crash at a precise point of a sharded cycle.
CRASHING_PUBLISH = """
import os, signal, sys
from combe.cli import main
from combe.format.dataset import Dataset
from combe.producer import sharded
from combe.producer.sources.kafka import KafkaSource

def crash(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

point = sys.argv[1]
if point == "read":
    fetch = KafkaSource._fetch
    def fetch_then_crash(self, *args):
        for batch in fetch(self, *args):
            yield batch
            crash()  # the first shard's first batch is folded, the rest unread
    KafkaSource._fetch = fetch_then_crash
elif point == "manifest":
    Dataset.announce = crash  # the first shard's manifest written, its head not moved
elif point == "commit":
    sharded.commit = crash  # every shard held has a new head, no dataset version names them
sys.exit(main(sys.argv[2:]))
"""


def _start(broker: KafkaBroker, topic: str, store: Path, shards: str, crash_at: str = "") -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", CRASHING_PUBLISH, crash_at, "publish", "--once", "--source",
            f"kafka://{broker.bootstrap}/{topic}", "--store", str(store), "--dataset", "ds", "--shard-count", "4",
            "--shards", shards, "--no-max-added", "--no-max-removed", "--kafka-timeout", "30"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = process.communicate(timeout=180)
    return process.returncode, err


def _both(broker: KafkaBroker, topic: str, store: Path, crash_at: str = "") -> tuple[tuple[int, str], ...]:
    """Two producer processes at once: shards 0-1 (crashing at ``crash_at``, if given) and shards 2-3."""
    first = _start(broker, topic, store, "0-1", crash_at)
    second = _start(broker, topic, store, "2-3")
    return _finish(first), _finish(second)


def _whole(store: Path) -> dict[Any, str | None]:
    with Consumer(str(store), "ds") as consumer:
        return {row["key"]: canon(row) for row in consumer.view().table.to_pylist()}


@pytest.mark.parametrize("crash_at", ["read", "manifest", "commit"])
def test_a_shard_producer_killed_mid_cycle_is_finished_exactly_by_its_restart(kafka_broker: KafkaBroker,
                                                                               tmp_path: Path, crash_at: str) -> None:
    topic = unique(f"sharded-{crash_at}")
    kafka_broker.create_topic(topic, partitions=4, config=RESUMABLE)
    store = tmp_path / "store"
    rng = random.Random(17)
    rounds = [random_changes(4000, 3000, rng, tombstones=0.05)]
    produce(kafka_broker.bootstrap, topic, rounds[0], partitioner=MURMUR2)
    for code, err in _both(kafka_broker, topic, store):
        assert code == 0, err
    dataset = Dataset.open(str(store), "ds")
    first = dataset.announced().version
    assert first is not None and dataset.sharded_manifest(first).shard_versions == [1, 1, 1, 1]
    assert _whole(store) == replay(rounds[0])

    # Large enough to take several batches, so "read" dies with most of it unread.
    rounds.append(random_changes(25_000, 3000, rng))
    produce(kafka_broker.bootstrap, topic, rounds[1], partitioner=MURMUR2)
    (crashed, err), (other, other_err) = _both(kafka_broker, topic, store, crash_at)
    assert crashed == -signal.SIGKILL, err
    assert other == 0, other_err
    heads = [dataset.shard(i, 4).announced().version for i in range(4)]
    assert heads[2:] == [2, 2]
    assert heads[:2] == ([2, 2] if crash_at == "commit" else [1, 1])
    assert (2 in dataset.shard(0, 4).versions()) == (crash_at != "read")
    assert dataset.sharded_manifest(dataset.announced().version or 0).shard_versions[2:] == [2, 2]

    code, err = _finish(_start(kafka_broker, topic, store, "0-1"))
    assert code == 0, err
    announced = dataset.sharded_manifest(dataset.announced().version or 0)
    assert announced.shard_versions == [2, 2, 2, 2]
    assert _whole(store) == replay([change for part in rounds for change in part])
    ends = end_offsets(kafka_broker.bootstrap, topic, 4)
    for shard in range(4):
        manifest = dataset.shard(shard, 4).manifest(2)
        assert manifest.positions == {topic: {str(shard): ends[str(shard)]}}  # its own partition only
        # Round two, each of the shard's messages once.
        assert manifest.changes["messages"] == sum(1 for key, _ in rounds[1] if partition_of(key, "string", 4) == shard)


def test_a_key_in_another_shards_partition_is_a_bad_record(kafka_broker: KafkaBroker, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from combe.cli import main

    topic = unique("sharded-misrouted")
    kafka_broker.create_topic(topic, partitions=2, config=RESUMABLE)
    good = [(f"k{i}", {"n": i}) for i in range(200)]
    produce(kafka_broker.bootstrap, topic, good, partitioner=MURMUR2)
    stray = next(f"x{i}" for i in range(100) if partition_of(f"x{i}", "string", 2) == 1)
    produce(kafka_broker.bootstrap, topic, [(stray, {"n": -1})], partition=0)  # a producer that ignored murmur2
    argv = ["publish", "--once", "--source", f"kafka://{kafka_broker.bootstrap}/{topic}", "--store",
            str(tmp_path / "store"), "--dataset", "ds", "--shard-count", "2"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"topic {topic} partition 0 offset " in err
    assert f"key '{stray}' belongs to shard 1 of 2" in err and "partition 0 holds shard 0" in err
    assert Dataset.open(str(tmp_path / "store"), "ds").announced().pointer is None
    assert main([*argv, "--on-bad-record", "skip"]) == 0
    assert _whole(tmp_path / "store") == replay(good)


def test_the_shard_count_must_divide_the_partition_count(kafka_broker: KafkaBroker, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from combe.cli import main

    topic = unique("sharded-3")
    kafka_broker.create_topic(topic, partitions=3, config=RESUMABLE)
    produce(kafka_broker.bootstrap, topic, [("a", {"n": 1})], partitioner=MURMUR2)
    assert main(["publish", "--once", "--source", f"kafka://{kafka_broker.bootstrap}/{topic}", "--store",
                 str(tmp_path / "store"), "--dataset", "ds", "--shard-count", "2"]) == 2
    assert f"topic {topic} has 3 partitions, which 2 shards do not divide" in capsys.readouterr().err
    assert Dataset.open(str(tmp_path / "store"), "ds").announced().pointer is None
