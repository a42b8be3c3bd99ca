"""The Kafka source against the real broker: the fold equals an independent replay, exact resume, start
watermarks, transactions, partitions added later, rebuilds after deleted records or cleaned tombstones,
compaction, consumer-group offsets, bad keys, value formats, and bounded errors."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewPartitions

from combe.cli import main
from combe.format.dataset import Dataset
from combe.format.errors import BadRecordError, ConfigError, SourceError
from combe.format.manifest import parse_time
from combe.producer import CycleResult, PublishOptions, Publisher, RecordFormat
from combe.producer.sources.kafka import KafkaSource
from combe.producer.validators import Limits
from tests.support.kafka_broker import KafkaBroker
from tests.support.kafka_data import (
    RESUMABLE, end_offsets, group_offsets, produce, published, random_changes, replay, unique,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    return Dataset.open(str(tmp_path / "store"), "ds")


def publish(broker: KafkaBroker, topic: str, dataset: Dataset, options: PublishOptions | None = None,
            on_progress: Callable[[int], None] | None = None, **source_options: object) -> CycleResult:
    with KafkaSource(f"kafka://{broker.bootstrap}/{topic}", dataset=dataset.name, timeout=10,
                     **source_options) as source:  # type: ignore[arg-type]
        return Publisher(dataset, source, options, on_progress).run_cycle()


def positions(dataset: Dataset) -> dict[str, dict[str, int]]:
    version = dataset.announced().version
    assert version is not None
    return dataset.manifest(version).positions


def test_multi_partition_fold_equals_a_dict_replay_with_tombstones(kafka_broker: KafkaBroker,
                                                                    dataset: Dataset) -> None:
    topic = unique("fold")
    kafka_broker.create_topic(topic, partitions=4, config=RESUMABLE)
    rng = random.Random(3)
    rounds = []
    for expected_version in (1, 2, 3):
        rounds.append(random_changes(400, 60, rng))
        produce(kafka_broker.bootstrap, topic, rounds[-1])
        result = publish(kafka_broker, topic, dataset)
        assert (result.outcome, result.version, result.messages) == ("published", expected_version, 400)
        assert published(dataset) == replay(*rounds)
        # Resume is exact: each version folded exactly the messages after its parent's positions.
        assert positions(dataset) == {topic: end_offsets(kafka_broker.bootstrap, topic, 4)}
        # ...and the consumer group shows those positions to lag tools. (Other tests' datasets are also
        # named "ds", so the combe-ds group holds their topics too: compare this topic's offsets.)
        assert group_offsets(kafka_broker.bootstrap, "combe-ds")[topic] == positions(dataset)[topic]
    keys_seen = {key for changes in rounds for key, _ in changes}
    assert 0 < len(replay(*rounds)) < len(keys_seen)  # deletes happened and were folded
    assert all(int(offset) > 0 for offset in positions(dataset)[topic].values())  # every partition had data
    assert publish(kafka_broker, topic, dataset).outcome == "noop"


def test_records_produced_during_a_run_wait_for_the_next_run(kafka_broker: KafkaBroker, dataset: Dataset) -> None:
    topic = unique("watermark")
    kafka_broker.create_topic(topic, partitions=2, config=RESUMABLE)
    first = random_changes(3000, 200, random.Random(5), tombstones=0.1)
    produce(kafka_broker.bootstrap, topic, first)
    ends_at_start = end_offsets(kafka_broker.bootstrap, topic, 2)
    late = [(f"late{i}", {"n": i, "s": "late"}) for i in range(50)]
    lags: list[int | None] = []

    with KafkaSource(f"kafka://{kafka_broker.bootstrap}/{topic}", dataset="ds", batch_messages=500) as source:
        def during_read(messages: int) -> None:
            if not lags:
                produce(kafka_broker.bootstrap, topic, late)
            lags.append(source.lag())

        result = Publisher(dataset, source, on_progress=during_read).run_cycle()

    assert len(lags) > 2  # the late records were produced while most of the topic was still unread
    assert lags[0] is not None and 0 < lags[0] < 3000 and lags[-1] == 0
    assert result.messages == 3000
    assert published(dataset) == replay(first)
    assert positions(dataset) == {topic: ends_at_start}
    result = publish(kafka_broker, topic, dataset)
    assert result.messages == 50
    assert published(dataset) == replay(first, late)


def test_aborted_transactions_never_appear_and_open_ones_are_not_waited_for(kafka_broker: KafkaBroker,
                                                                           dataset: Dataset) -> None:
    topic = unique("txn")
    # No segment rolls: the aborted records stay in the log, so read_committed is what hides them.
    kafka_broker.create_topic(topic, partitions=2, config={**RESUMABLE, "segment.ms": "3600000"})
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "transactional.id": unique("txn")})
    producer.init_transactions(30)

    def transaction(changes: list[tuple[str, dict[str, object] | None]]) -> None:
        producer.begin_transaction()
        for key, value in changes:
            producer.produce(topic, key=key, value=None if value is None else json.dumps(value))
        producer.flush(30)

    committed = [(f"a{i}", {"n": i, "s": "committed"}) for i in range(6)]
    aborted = [(f"a{i}", {"n": -1, "s": "aborted"}) for i in range(3)] + [("b0", {"n": 0, "s": "aborted"})]
    still_open = [(f"c{i}", {"n": i, "s": "open"}) for i in range(4)] + [("a5", None)]
    transaction(committed)
    producer.commit_transaction(30)
    transaction(aborted)
    producer.abort_transaction(30)
    transaction(still_open)

    # Stops at the last stable offset: waiting for the open records would end in a "no data" SourceError.
    result = publish(kafka_broker, topic, dataset)
    assert result.version == 1
    assert published(dataset) == replay(committed)

    producer.commit_transaction(30)
    publish(kafka_broker, topic, dataset)
    assert published(dataset) == replay(committed, still_open)
    assert positions(dataset) == {topic: end_offsets(kafka_broker.bootstrap, topic, 2)}


def test_a_key_that_cannot_be_decoded_is_a_bad_record_with_its_offset(kafka_broker: KafkaBroker,
                                                                       dataset: Dataset) -> None:
    topic = unique("badkey")
    kafka_broker.create_topic(topic, partitions=2, config=RESUMABLE)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    producer.produce(topic, key=b"good", value=b'{"n": 1}', partition=1)
    producer.produce(topic, key=b"\xff\xfe", value=b'{"n": 2}', partition=1)
    assert producer.flush(30) == 0

    with pytest.raises(BadRecordError) as caught:
        publish(kafka_broker, topic, dataset)
    assert (caught.value.stream, caught.value.partition, caught.value.offset) == (topic, 1, 1)
    assert f"topic {topic} partition 1 offset 1" in str(caught.value)
    assert "UTF-8" in str(caught.value)
    assert dataset.announced().version is None

    result = publish(kafka_broker, topic, dataset, PublishOptions(on_bad_record="skip"))
    assert result.bad_records == 1
    assert published(dataset) == {"good": {"n": 1}}


@pytest.mark.parametrize("value_format", ["string", "bytes"])
def test_raw_values_keep_the_payload(kafka_broker: KafkaBroker, dataset: Dataset, value_format: str) -> None:
    topic = unique(value_format)
    kafka_broker.create_topic(topic, partitions=1, config=RESUMABLE)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for key, value in [("a", b"not json"), ("b", b"{}"), ("a", b"second"), ("b", None)]:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    publish(kafka_broker, topic, dataset, PublishOptions(fmt=RecordFormat(value_format=value_format)))

    assert published(dataset) == {"a": {"value": "second" if value_format == "string" else b"second"}}


def test_partitions_added_later_are_read_from_their_beginning(kafka_broker: KafkaBroker, dataset: Dataset) -> None:
    topic = unique("grow")
    kafka_broker.create_topic(topic, partitions=2, config=RESUMABLE)
    first = [(f"k{i}", {"n": i}) for i in range(20)]
    produce(kafka_broker.bootstrap, topic, first)
    publish(kafka_broker, topic, dataset)

    admin = kafka_broker.admin()
    admin.create_partitions([NewPartitions(topic, 3)])[topic].result(timeout=30)
    deadline = time.monotonic() + 30
    while len(admin.list_topics(topic, timeout=10).topics[topic].partitions) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    added = [(f"new{i}", {"n": i}) for i in range(5)]
    produce(kafka_broker.bootstrap, topic, added, partition=2)

    result = publish(kafka_broker, topic, dataset)
    assert result.messages == 5
    assert published(dataset) == replay(first, added)
    assert positions(dataset) == {topic: end_offsets(kafka_broker.bootstrap, topic, 3)}
    assert positions(dataset)[topic]["2"] == 5


def test_a_log_start_past_the_positions_stops_unless_rebuilt(kafka_broker: KafkaBroker, dataset: Dataset) -> None:
    topic = unique("truncated")
    # DeleteRecords needs the delete policy; compaction stays on.
    kafka_broker.create_topic(topic, partitions=1, config={**RESUMABLE, "cleanup.policy": "compact,delete"})
    first = [(f"k{i}", {"n": i}) for i in range(10)]
    produce(kafka_broker.bootstrap, topic, first)
    publish(kafka_broker, topic, dataset)
    # Offset 10 deletes k1; the rest rewrites the topic's other keys, changing k0 and adding k10.
    second = [("k1", None), ("k0", {"n": 100})] + [(f"k{i}", {"n": i}) for i in range(2, 11)]
    produce(kafka_broker.bootstrap, topic, second)
    admin = kafka_broker.admin()
    admin.delete_records([TopicPartition(topic, 0, 11)])[TopicPartition(topic, 0, 11)].result(timeout=30)

    with pytest.raises(SourceError, match=r"partition 0 now starts at offset 11, past the announced position 10.*"
                                          r"rebuild=now"):
        publish(kafka_broker, topic, dataset)
    assert dataset.announced().version == 1

    result = publish(kafka_broker, topic, dataset, rebuild="now")
    assert (result.outcome, result.version, result.rebuilt) == ("published", 2, True)
    # The lost delete of k1 is found by its absence from the re-read topic: the state is exact anyway.
    assert published(dataset) == replay(first, second)
    assert (result.added, result.updated, result.removed) == (1, 1, 1)
    manifest = dataset.manifest(2)
    assert manifest.parent == 1 and manifest.delta is not None and manifest.reverse is not None
    assert manifest.positions == {topic: {"0": 21}}
    assert publish(kafka_broker, topic, dataset).outcome == "noop"  # resumes normally afterwards


def test_positions_older_than_delete_retention_need_a_rebuild(kafka_broker: KafkaBroker, dataset: Dataset) -> None:
    topic = unique("stale")
    kafka_broker.create_topic(topic, partitions=2, config={"delete.retention.ms": "1000", "segment.ms": "3600000"})
    first = [(f"k{i}", {"n": i}) for i in range(10)]
    produce(kafka_broker.bootstrap, topic, first)
    publish(kafka_broker, topic, dataset)
    # Until the announced position is older than delete.retention.ms, by the manifest's own clock.
    created = parse_time(dataset.manifest(1).created_at)
    deadline = time.monotonic() + 30
    while datetime.now(timezone.utc) - created <= timedelta(seconds=1.1):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Nothing written since: nothing can have been cleaned away, so an old position is fine.
    assert publish(kafka_broker, topic, dataset).outcome == "noop"

    second = [("k0", None), ("k11", {"n": 11})]
    produce(kafka_broker.bootstrap, topic, second)
    with pytest.raises(SourceError, match=r"delete\.retention\.ms.*tombstones.*rebuild=now"):
        publish(kafka_broker, topic, dataset)
    assert dataset.announced().version == 1

    result = publish(kafka_broker, topic, dataset, rebuild="auto")
    assert (result.version, result.rebuilt) == (2, True)
    assert published(dataset) == replay(first, second)


def test_switching_topics_needs_a_rebuild(kafka_broker: KafkaBroker, dataset: Dataset) -> None:
    old, new = unique("old"), unique("new")
    for topic in (old, new):
        kafka_broker.create_topic(topic, partitions=1, config=RESUMABLE)
    first = [(f"k{i}", {"n": i}) for i in range(10)]
    second = [(f"k{i}", {"n": i}) for i in range(5, 12)]
    produce(kafka_broker.bootstrap, old, first)
    produce(kafka_broker.bootstrap, new, second)
    publish(kafka_broker, old, dataset)

    with pytest.raises(SourceError, match=rf"folded from {old}, not from this topic.*rebuild=now"):
        publish(kafka_broker, new, dataset)
    result = publish(kafka_broker, new, dataset, rebuild="now", options=PublishOptions(limits=Limits(max_removed=None)))
    assert (result.added, result.updated, result.removed) == (2, 0, 5)
    assert published(dataset) == replay(second)
    assert positions(dataset) == {new: {"0": 7}}


def _messages(broker: KafkaBroker, topic: str, partitions: int) -> list[tuple[bytes | None, bytes | None]]:
    """Every message now in the log (read_uncommitted), to see what the cleaner has left."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "inspect", "enable.partition.eof": True,
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    found: list[tuple[bytes | None, bytes | None]] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + 30
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline
            for message in consumer.consume(1000, 0.2):
                error = message.error()
                if error is None:
                    found.append((message.key(), message.value()))
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())  # type: ignore[arg-type]
                else:
                    raise AssertionError(error)
    finally:
        consumer.close()
    return found


def test_a_compacted_topic_folds_to_the_same_state_from_a_fresh_store(kafka_broker: KafkaBroker,
                                                                     tmp_path: Path) -> None:
    topic = unique("compacted")
    kafka_broker.create_topic(topic, partitions=2)  # segments roll after 100 ms, tombstones kept for 100 ms
    changes = [(f"k{i % 30}", {"n": i}) for i in range(300)] + [(f"k{i}", None) for i in range(10)]
    produce(kafka_broker.bootstrap, topic, changes, idempotent=False)
    first = Dataset.open(str(tmp_path / "first"), "ds")
    publish(kafka_broker, topic, first)
    assert published(first) == replay(changes)

    # Roll segments (the active one is never cleaned) until the cleaner has dropped the overwritten values
    # and, in a later pass, the tombstones.
    roller = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": False})
    deadline = time.monotonic() + 60
    while True:
        time.sleep(0.3)
        for partition in (0, 1):
            roller.produce(topic, key="roll", value=None, partition=partition)
        assert roller.flush(30) == 0
        left = _messages(kafka_broker, topic, 2)
        if len(left) < 60 and not {key for key, _ in left} & {f"k{i}".encode() for i in range(10)}:
            break
        assert time.monotonic() < deadline, f"not compacted after 60 s: {len(left)} messages left"

    fresh = Dataset.open(str(tmp_path / "fresh"), "ds")
    publish(kafka_broker, topic, fresh)
    assert published(fresh) == published(first)
    # The first store's positions are now older than delete.retention.ms: it rebuilds and finds no change.
    result = publish(kafka_broker, topic, first, rebuild="auto")
    assert (result.outcome, result.rebuilt) == ("noop", True)


def test_an_unreachable_broker_or_missing_topic_fails_within_the_timeout(kafka_broker: KafkaBroker,
                                                                         dataset: Dataset) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    started = time.monotonic()
    with pytest.raises(SourceError, match=rf"cannot reach Kafka at 127.0.0.1:{port} within 2 s"):
        with KafkaSource(f"kafka://127.0.0.1:{port}/topic", dataset="ds", timeout=2) as source:
            Publisher(dataset, source).run_cycle()
    assert time.monotonic() - started < 8

    missing = unique("missing")
    with pytest.raises(SourceError, match=rf"topic {missing} does not exist"):
        publish(kafka_broker, missing, dataset)
    assert missing not in kafka_broker.admin().list_topics(timeout=10).topics  # and was not auto-created


def test_client_settings_are_checked(kafka_broker: KafkaBroker) -> None:
    url = f"kafka://{kafka_broker.bootstrap}/topic"
    with pytest.raises(ConfigError, match="no.such.setting"):
        KafkaSource(url, client_config={"no.such.setting": "1"})
    with pytest.raises(ConfigError, match="enable.auto.commit cannot be set"):
        KafkaSource(url, client_config={"enable.auto.commit": "true"})
    for bad in ("kafka://", "kafka:///topic", "kafka://host:9092/", "kafka://host:9092/a/b"):
        with pytest.raises(ConfigError, match="expected kafka://host:port"):
            KafkaSource(bad)


def test_the_command_line_publishes_with_a_group_and_client_settings(kafka_broker: KafkaBroker, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    topic = unique("cli")
    kafka_broker.create_topic(topic, partitions=3, config=RESUMABLE)
    changes = random_changes(200, 30, random.Random(9))
    produce(kafka_broker.bootstrap, topic, changes)
    store = str(tmp_path / "store")
    argv = ["publish", "--source", f"kafka://{kafka_broker.bootstrap}/{topic}", "--store", store,
            "--dataset", "cli", "--once", "--group", "lag-watch", "-X", "client.id=combe-test",
            "-X", "max.partition.fetch.bytes=100000", "--kafka-timeout", "10", "--rebuild=auto"]

    assert main(argv + ["--json"]) == 0
    assert '"outcome": "published"' in capsys.readouterr().out
    dataset = Dataset.open(store, "cli")
    assert published(dataset) == replay(changes)
    assert group_offsets(kafka_broker.bootstrap, "lag-watch") == positions(dataset)

    assert main(argv[:-1] + ["--rebuild"]) == 0  # a forced rebuild finds nothing to change
    assert "nothing to publish" in capsys.readouterr().out
    assert main(argv + ["-X", "auto.offset.reset=earliest"]) == 2
    assert "auto.offset.reset cannot be set" in capsys.readouterr().err
