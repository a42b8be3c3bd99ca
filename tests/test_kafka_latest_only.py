"""On a Kafka topic only the latest record per key in a cycle is decoded, as compaction would leave it."""

from __future__ import annotations

from pathlib import Path

import pytest

from combe.format.dataset import Dataset
from combe.format.errors import BadRecordError
from combe.producer import PublishOptions, Publisher, RecordFormat
from combe.producer.sources.kafka import KafkaSource
from combe.producer.state import load_state
from tests.support.kafka_broker import KafkaBroker
from tests.support.kafka_data import RESUMABLE, produce_raw, unique

pytestmark = pytest.mark.kafka



def publish(broker: KafkaBroker, topic: str, dataset: Dataset, options: PublishOptions) -> int | None:
    with KafkaSource(f"kafka://{broker.bootstrap}/{topic}", dataset=dataset.name, timeout=10) as source:
        return Publisher(dataset, source, options).run_cycle().version


def state(dataset: Dataset) -> dict[object, dict[str, object]]:
    version = dataset.announced().version
    assert version is not None
    return {row.pop("key"): row for row in load_state(dataset, dataset.manifest(version)).table().to_pylist()}


def test_a_superseded_bad_record_is_never_decoded(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    topic = unique("latest")
    kafka_broker.create_topic(topic, partitions=1, config=RESUMABLE)
    produce_raw(kafka_broker.bootstrap, topic, [(b"a", b'{"x": 1'), (b"a", b'{"x": 2}'), (b"b", b'{"x": 3}')])
    dataset = Dataset.open(str(tmp_path), "d")
    assert publish(kafka_broker, topic, dataset, PublishOptions()) == 1
    assert state(dataset) == {"a": {"x": 2}, "b": {"x": 3}}

    # The latest record of a key is decoded, so a bad one fails the cycle and names its offset.
    produce_raw(kafka_broker.bootstrap, topic, [(b"b", b'{"x": 4}'), (b"b", b"[5]")])
    with pytest.raises(BadRecordError, match=f"topic {topic} partition 0 offset 4.*not an object"):
        publish(kafka_broker, topic, dataset, PublishOptions())
    assert dataset.announced().version == 1


def test_raw_keys_that_decode_to_one_key_fold_in_offset_order(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    topic = unique("latest-int")
    kafka_broker.create_topic(topic, partitions=1, config=RESUMABLE)
    # "7" comes first and again last: its last record is the newest of the three spellings of key 7.
    produce_raw(kafka_broker.bootstrap, topic, [(b"7", b'{"x": 1}'), (b"07", b'{"x": 2}'), (b"007", b'{"x": 3}'),
                                      (b"7", b'{"x": 4}'), (b"8", b'{"x": 5}'), (b"08", None)])
    dataset = Dataset.open(str(tmp_path), "d")
    assert publish(kafka_broker, topic, dataset, PublishOptions(fmt=RecordFormat(key_type="int64"))) == 1
    assert state(dataset) == {7: {"x": 4}}


def test_keyless_records_are_each_bad(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    topic = unique("latest-keyless")
    kafka_broker.create_topic(topic, partitions=1, compact=False)  # compacted topics refuse keyless messages
    produce_raw(kafka_broker.bootstrap, topic, [(None, b'{"x": 1}'), (b"a", b'{"x": 2}'), (None, b'{"x": 3}')])
    dataset = Dataset.open(str(tmp_path), "d")
    with KafkaSource(f"kafka://{kafka_broker.bootstrap}/{topic}", dataset="d", timeout=10) as source:
        result = Publisher(dataset, source, PublishOptions(on_bad_record="skip")).run_cycle()
    assert (result.version, result.bad_records, result.added) == (1, 2, 1)
    with KafkaSource(f"kafka://{kafka_broker.bootstrap}/{topic}", dataset="d2", timeout=10) as source:
        with pytest.raises(BadRecordError, match="offset 0.*no key"):
            Publisher(Dataset.open(str(tmp_path), "d2"), source, PublishOptions()).run_cycle()
