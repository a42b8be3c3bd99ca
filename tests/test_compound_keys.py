"""Compound keys (key type struct<...>): JSON object message keys, stored as canonical JSON array text, read back
by a tuple or a dict (Consumer.get) and by query parameters (HTTP); format/keys.py is the one rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from combe.cli import main
from combe.consumer import Consumer
from combe.consumer.server import create_app
from combe.format.dataset import Dataset
from combe.format.errors import BadRecordError, ConfigError, KeyTypeError
from combe.format.keys import check_key_type, lookup_key, message_key
from combe.format.schema import Schema
from combe.producer import PublishOptions, Publisher, RecordFormat, open_source
from combe.producer.sources.kafka import KafkaSource
from tests.support.changelog import append_lines
from tests.support.kafka_broker import KafkaBroker
from tests.support.kafka_data import RESUMABLE, produce_raw, unique

KEY = "struct<tenant:int64,id:string>"
FMT = RecordFormat(key_type=KEY)

# A message key -> its stored text, or the reason it is refused.
MESSAGE_KEYS: dict[Any, str] = {
    b'{"tenant": 7, "id": "x"}': '[7,"x"]',
    b'{"id":"x","tenant":7}': '[7,"x"]',  # any field order, any spacing: one key
    '{"tenant": -9223372036854775808, "id": "\u00e9\\n/"}': '[-9223372036854775808,"\u00e9\\n/"]',
    b'{"tenant": 7}': "it lacks 'id'",
    b'{"tenant": 7, "id": "x", "z": 1}': "it has other fields 'z'",
    b'{"tenant": 7.0, "id": "x"}': "key field 'tenant' is 7.0, not int64",
    b'{"tenant": "7", "id": "x"}': "key field 'tenant' is '7', not int64",
    b'{"tenant": true, "id": "x"}': "key field 'tenant' is True, not int64",
    b'{"tenant": 9223372036854775808, "id": "x"}': "not int64",
    b'{"tenant": 7, "id": 5}': "key field 'id' is 5, not string",
    b'{"tenant": 7, "id": null}': "key field 'id' is None, not string",
    b'[7, "x"]': "is not a JSON object",
    b"x": "key is not JSON",
}


@pytest.mark.parametrize("raw", MESSAGE_KEYS, ids=[repr(k)[:40] for k in MESSAGE_KEYS])
def test_a_message_key_is_an_object_of_exactly_the_fields_of_their_types(raw: Any) -> None:
    expected = MESSAGE_KEYS[raw]
    if expected.startswith("["):
        assert message_key(raw, KEY) == expected
    else:
        with pytest.raises(ValueError, match=expected):
            message_key(raw, KEY)


def test_key_types() -> None:
    assert check_key_type("struct<tenant:int64,id:string>") == KEY
    assert check_key_type('struct<"a b":string>') == 'struct<"a b":string>'
    for bad in ("struct<>", "struct<a:float64>", "struct<a:struct<b:int64>>", "list<string>", "uuid"):
        with pytest.raises(ValueError, match="is not string, int64 or struct"):
            check_key_type(bad)
    with pytest.raises(ConfigError, match="key_type='struct<a:bool>'"):
        RecordFormat(key_type="struct<a:bool>")


def test_a_lookup_key_is_a_tuple_or_a_dict() -> None:
    for given in ((7, "x"), [7, "x"], {"id": "x", "tenant": 7}, ("7", "x"), {"tenant": "007", "id": "x"},
                  '[7,"x"]'):  # the stored text too, exactly
        assert lookup_key(given, KEY) == '[7,"x"]'
    for given, why in [('[7, "x"]', "or a key's stored text"), ('["7","x"]', "or a key's stored text"),
                       ("x", "or a key's stored text"), ((7,), "not a tuple of 2 values"),
                       ({"tenant": 7}, "exactly the fields"), ((7, 5), "field 'id' 5 is a int"),
                       ((7.5, "x"), "field 'tenant' 7.5 is not a 64-bit integer"), (7, "not a tuple")]:
        with pytest.raises(KeyTypeError, match=why):
            lookup_key(given, KEY)


def publish(store: str, path: str, bulk: bool = True, key_delimiter: str | None = None, **options: Any) -> Any:
    options.setdefault("fmt", FMT)
    publisher = Publisher(Dataset.open(store, "d"), open_source(path, key_delimiter=key_delimiter),
                          PublishOptions(**options))
    publisher.bulk = bulk
    return publisher.run_cycle()


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "per-record"])
def test_jsonl_and_kcat_files(store: str, tmp_path: Path, bulk: bool) -> None:
    lines = tmp_path / "c.jsonl"
    append_lines(lines, ['{"key": {"tenant": 7, "id": "x"}, "value": {"name": "a"}}',
                         '{"key": {"id": "y", "tenant": 7}, "value": {"name": "b"}}',
                         '{"key": {"tenant": 10, "id": "x"}, "value": {"name": "c"}}',
                         '{"key": {"tenant": 7, "id": "y"}, "value": null}'])
    assert publish(store, str(lines), bulk).version == 1
    with Consumer(store, "d") as consumer:
        assert consumer.get((7, "x")) == {"key": '[7,"x"]', "name": "a"}
        assert consumer.get({"tenant": 10, "id": "x"}) == {"key": '[10,"x"]', "name": "c"}
        assert consumer.get((7, "y")) is None
        # Key order is the stored text's bytes: "[10," before "[7,".
        assert [r["key"] for r in consumer.view().table.to_pylist()] == ['[10,"x"]', '[7,"x"]']
        assert consumer.get_many([(7, "x"), (1, "z"), {"id": "x", "tenant": 10}] * 20) == [
            consumer.get((7, "x")), None, consumer.get((10, "x"))] * 20
    append_lines(lines, ['{"key": {"tenant": 8, "id": "z"}, "value": {"name": "d"}}',
                         '{"key": {"tenant": 8.5, "id": "z"}, "value": {"name": "e"}}'])
    with pytest.raises(BadRecordError, match=f"{lines} line 6: key field 'tenant' is 8.5, not int64"):
        publish(store, str(lines), bulk)
    assert publish(store, str(lines), bulk, on_bad_record="skip").bad_records == 1

    kcat = tmp_path / "c.txt"
    append_lines(kcat, ['{"tenant":1,"id":"a"}|{"name": "k"}', '{"tenant":1}|{"name": "l"}'])
    with pytest.raises(BadRecordError, match=f"{kcat} line 2: key .* lacks 'id'"):
        publish(str(tmp_path / "kcat"), str(kcat), bulk, key_delimiter="|")


def test_a_value_that_carries_the_key_field_must_agree(store: str, tmp_path: Path) -> None:
    lines = tmp_path / "c.jsonl"
    append_lines(lines, ['{"key": {"tenant": 1, "id": "a"}, "value": {"key": {"id": "a", "tenant": 1}, "n": 1}}',
                         '{"key": {"tenant": 1, "id": "b"}, "value": {"key": {"id": "a", "tenant": 1}, "n": 2}}'])
    with pytest.raises(BadRecordError, match="line 2: the value's 'key' field"):
        publish(store, str(lines))


def test_a_compound_key_is_not_sharded(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.jsonl").touch()
    with pytest.raises(ConfigError, match="a compound key .* cannot be sharded"):
        Publisher(Dataset.open(store, "d").shard(0, 2), open_source(str(tmp_path / "c.jsonl")),
                  PublishOptions(fmt=FMT))
    assert main(["publish", "--store", store, "--dataset", "d", "--source", str(tmp_path / "c.jsonl"), "--once",
                 "--key-type", KEY, "--shard-count", "2"]) == 2
    assert "a compound key (struct<tenant:int64,id:string>) cannot be sharded" in capsys.readouterr().err
    assert Dataset.open(store, "d").sharding() is None  # no shards.json written



def kafka_publish(broker: KafkaBroker, topic: str, dataset: Dataset, **options: Any) -> Any:
    with KafkaSource(f"kafka://{broker.bootstrap}/{topic}", dataset=dataset.name, timeout=10) as source:
        return Publisher(dataset, source, PublishOptions(fmt=FMT, **options)).run_cycle()


def test_change_data_capture_keys_from_kafka(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    topic = unique("compound")
    kafka_broker.create_topic(topic, partitions=1, config=RESUMABLE)
    produce_raw(kafka_broker.bootstrap, topic, [(b'{"tenant": 7, "id": "x"}', b'{"name": "a", "n": 1}'),
                                  (b'{"tenant": 7, "id": "y/z"}', b'{"name": "b", "n": 2}'),
                                  (b'{"id": "x", "tenant": 7}', b'{"name": "a2", "n": 3}'),  # the same key
                                  (b'{"tenant": 8, "id": "x"}', b'{"name": "c", "n": 4}')])
    dataset = Dataset.open(str(tmp_path), "d")
    result = kafka_publish(kafka_broker, topic, dataset)
    assert (result.version, result.added) == (1, 3)
    produce_raw(kafka_broker.bootstrap, topic, [(b'{"tenant": 8, "id": "x"}', None),  # a tombstone deletes the key
                                  (b'{"tenant": 9, "id": "q"}', b'{"name": "d", "n": 5}'),
                                  (b'{"tenant": 9, "ID": "q"}', b'{"name": "e", "n": 6}')])
    with pytest.raises(BadRecordError, match=f"topic {topic} partition 0 offset 6: key .* it lacks 'id'; it has "
                                             "other fields 'ID'"):
        kafka_publish(kafka_broker, topic, dataset)
    assert dataset.announced().version == 1
    assert kafka_publish(kafka_broker, topic, dataset, on_bad_record="skip").bad_records == 1

    with Consumer(str(tmp_path), "d") as consumer:
        assert consumer.version == 2
        assert consumer.get((7, "x")) == {"key": '[7,"x"]', "name": "a2", "n": 3}
        assert consumer.get((8, "x")) is None and consumer.get({"tenant": 9, "id": "q"})["n"] == 5
        app = create_app(consumers=[consumer])
        try:
            client = app.test_client()
            ok = client.get("/v1/datasets/d/records?tenant=7&id=y%2Fz")
            assert ok.status_code == 200, ok.get_data(as_text=True)
            assert ok.get_json()["key"] == '[7,"y/z"]' and ok.get_json()["record"]["name"] == "b"
            assert client.get("/v1/datasets/d/records?id=x&tenant=007").get_json()["record"]["n"] == 3
            assert client.get("/v1/datasets/d/records?tenant=8&id=x").status_code == 404
            for query, why in [("tenant=7", "exactly the fields"), ("tenant=7&id=x&z=1", "exactly the fields"),
                               ("tenant=x&id=x", "not a 64-bit integer"), ("tenant=7&id=x&id=y", "given 2 times")]:
                refused = client.get(f"/v1/datasets/d/records?{query}")
                assert refused.status_code == 400 and why in refused.get_json()["error"]["message"], query
            path = client.get("/v1/datasets/d/records/7/x")
            assert path.status_code == 400 and "/v1/datasets/d/records?tenant=...&id=..." in path.get_json()[
                "error"]["message"]
            batch = client.post("/v1/datasets/d/records:batchGet",
                                json={"keys": [[7, "x"], {"tenant": 9, "id": "q"}, [1, "none"]]})
            assert [r and r["n"] for r in batch.get_json()["records"]] == [3, 5, None]
            bad = client.post("/v1/datasets/d/records:batchGet", json={"keys": ['[7, "x"]']})
            assert bad.status_code == 400 and bad.get_json()["error"]["type"] == "KeyTypeError"
            described = client.get("/v1/datasets/d").get_json()
            assert described["key"] == {"field": "key", "type": KEY}
        finally:
            app.extensions["combe"].close()


def test_a_dataset_with_a_single_key_refuses_query_parameters(store: str, tmp_path: Path) -> None:
    lines = tmp_path / "s.jsonl"
    append_lines(lines, ['{"key": "a", "value": {"n": 1}}'])
    assert publish(store, str(lines), fmt=RecordFormat()).version == 1
    with Consumer(store, "d") as consumer:
        app = create_app(consumers=[consumer])
        try:
            response = app.test_client().get("/v1/datasets/d/records?key=a")
            assert response.status_code == 400 and "records/<key>" in response.get_json()["error"]["message"]
        finally:
            app.extensions["combe"].close()


def test_a_declared_schema_declares_a_compound_key(store: str, tmp_path: Path) -> None:
    arrow = pa.schema([pa.field("key", pa.struct([pa.field("tenant", pa.int64()), pa.field("id", pa.string())]),
                                nullable=False), pa.field("name", pa.string())])
    assert PublishOptions(schema=arrow).fmt == FMT
    assert Schema.of_json([{"name": "key", "type": KEY}, {"name": "name", "type": "string"}]).declared_arrow() == arrow
    lines = tmp_path / "c.jsonl"
    append_lines(lines, ['{"key": {"tenant": 1, "id": "a"}, "value": {"name": "n"}}'])
    assert publish(store, str(lines), fmt=RecordFormat(), schema=arrow).version == 1
    with Consumer(store, "d") as consumer:
        assert consumer.get((1, "a")) == {"key": '[1,"a"]', "name": "n"}
