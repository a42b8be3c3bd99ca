"""A declared schema (PublishOptions.schema, combe publish --schema FILE): no inference, and a record that does
not fit it is a bad record named by its place, on the bulk and the per-record path alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from combe.cli import main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.errors import BadRecordError, ConfigError
from combe.format.schema import Schema
from combe.producer import PublishOptions, Publisher, RecordFormat, open_source
from combe.producer.sources.kafka import KafkaSource
from tests.support.changelog import append_jsonl, append_lines
from tests.support.kafka_broker import KafkaBroker
from tests.support.kafka_data import RESUMABLE, produce_raw, unique

# The JSON form is a manifest's "schema": the key column first, then the value columns.
DECLARED = [{"name": "id", "type": "int64"}, {"name": "title", "type": "string"}, {"name": "score", "type": "float64"},
            {"name": "tags", "type": "list<string>"}, {"name": "meta", "type": "struct<a:int64,b:string>"},
            {"name": "extra", "type": "json"}]
ARROW = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("title", pa.string()),
                   pa.field("score", pa.float64()), pa.field("tags", pa.list_(pa.string())),
                   pa.field("meta", pa.struct([pa.field("a", pa.int64()), pa.field("b", pa.string())])),
                   pa.field("extra", pa.string(), metadata={b"combe.type": b"json"})])
GOOD = [(1, {"title": "a", "score": 1, "tags": ["x"], "meta": {"a": 1}, "extra": [1, "two"]}),
        (2, {"title": "b"}), (3, {"score": 2.5, "meta": {"b": "q", "a": None}, "tags": []})]
# A value that does not fit -> the reason the bad record gives.
BAD = {
    '{"title": 5}': "field 'title' is int64, which the declared string does not hold",
    '{"title": "c", "year": 1}': "field 'year' is not in the declared schema",
    '{"score": "1.5"}': "field 'score' is string, which the declared float64 does not hold",
    '{"score": true}': "field 'score' is bool",
    '{"meta": {"a": 1, "c": 2}}': "field 'meta' is struct<a:int64,c:int64>, which the declared",
    '{"meta": {"a": 1.5}}': r"field 'meta' \(at .a\) is float64, which the declared int64",
    '{"tags": [1]}': r"field 'tags' \(at \[\]\) is int64, which the declared string",
    '{"tags": "x"}': "field 'tags' is string, which the declared list<string>",
}


def publish(store: str, path: Path, **options: Any) -> Any:
    options.setdefault("schema", ARROW)
    bulk = options.pop("bulk", True)
    publisher = Publisher(Dataset.open(store, "d"), open_source(str(path)), PublishOptions(**options))
    publisher.bulk = bulk
    return publisher.run_cycle()


def test_the_json_form_is_the_manifests_and_reads_as_the_arrow_form() -> None:
    declared = Schema.of_json(DECLARED)
    assert declared.to_json() == DECLARED
    assert declared.declared_arrow() == ARROW
    assert Schema.declared(ARROW) == declared


def test_a_declared_schema_publishes_its_columns_whatever_the_records_hold(store: str, changelog: Path) -> None:
    append_jsonl(changelog, GOOD)
    assert publish(store, changelog).version == 1
    manifest = Dataset.open(store, "d").manifest(1)
    assert manifest.schema.to_json() == DECLARED  # "meta.b" and "extra" typed though no record says so
    with Consumer(store, "d") as consumer:
        assert consumer.get(1) == {"id": 1, "title": "a", "score": 1.0, "tags": ["x"], "meta": {"a": 1, "b": None},
                                   "extra": [1, "two"]}
        assert consumer.get(2) == {"id": 2, "title": "b", "score": None, "tags": None, "meta": None, "extra": None}


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "per-record"])
@pytest.mark.parametrize("value", BAD)
def test_a_value_that_does_not_fit_is_a_bad_record_named_by_line(store: str, changelog: Path, value: str,
                                                                  bulk: bool) -> None:
    append_jsonl(changelog, GOOD)
    append_lines(changelog, [f'{{"key": 4, "value": {value}}}', '{"key": 5, "value": {"title": "e"}}'])
    with pytest.raises(BadRecordError, match=f"{changelog} line 4: {BAD[value]}"):
        publish(store, changelog, bulk=bulk)
    assert Dataset.open(store, "d").announced().version is None  # nothing published
    result = publish(store, changelog, bulk=bulk, on_bad_record="skip")
    assert (result.version, result.bad_records, result.added) == (1, 1, 4)
    with Consumer(store, "d") as consumer:
        assert consumer.get(4) is None and consumer.get(5)["title"] == "e"


def test_an_existing_dataset_takes_a_declared_schema_it_can_grow_into(store: str, changelog: Path) -> None:
    append_jsonl(changelog, [(1, {"title": "a", "tags": []})])  # inferred: title string, tags list<null>
    assert publish(store, changelog, schema=None, fmt=RecordFormat(key_field="id", key_type="int64")).version == 1
    append_jsonl(changelog, [(2, {"title": "b", "tags": ["x"], "score": 3})])
    assert publish(store, changelog).version == 2
    manifest = Dataset.open(store, "d").manifest(2)
    assert manifest.delta is not None and not manifest.schema_change  # growth: a delta, as inference would
    assert [c["name"] for c in manifest.schema.to_json()] == ["id", "title", "tags", "score", "meta", "extra"]
    with Consumer(store, "d") as consumer:
        assert consumer.get(2)["score"] == 3.0 and consumer.get(1)["tags"] == []

    narrower = pa.schema([ARROW.field("id"), ARROW.field("title")])
    with pytest.raises(ConfigError, match="has no column 'tags', which the dataset holds"):
        publish(store, changelog, schema=narrower)
    retyped = pa.schema([ARROW.field("id"), pa.field("title", pa.int64()), *list(ARROW)[2:]])
    with pytest.raises(ConfigError, match="makes column 'title' a int64, but the dataset holds it as string"):
        publish(store, changelog, schema=retyped)


def test_options_that_disagree_with_the_declaration_are_refused() -> None:
    with pytest.raises(ConfigError, match="key_field='uid', but the declared schema's key column is 'id'"):
        PublishOptions(schema=ARROW, fmt=RecordFormat(key_field="uid"))
    with pytest.raises(ConfigError, match="key_type='struct<id:int64>', but the declared schema's key column"):
        PublishOptions(schema=ARROW, fmt=RecordFormat(key_type="struct<id:int64>"))
    with pytest.raises(ConfigError, match="value_format json"):
        PublishOptions(schema=ARROW, fmt=RecordFormat(value_format="string"))
    with pytest.raises(ConfigError, match="allow_schema_change"):
        PublishOptions(schema=ARROW, allow_schema_change=True)
    with pytest.raises(ConfigError, match="combe schema: column .x.: Arrow type float is not one combe writes"):
        PublishOptions(schema=pa.schema([pa.field("id", pa.string()), pa.field("x", pa.float32())]))
    with pytest.raises(ConfigError, match="key type 'float64' is not"):
        PublishOptions(schema=pa.schema([pa.field("id", pa.float64())]))
    assert PublishOptions(schema=ARROW).fmt == RecordFormat(key_field="id", key_type="int64")


def test_the_cli_reads_the_schema_file(tmp_path: Path, store: str, changelog: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(DECLARED))
    append_jsonl(changelog, GOOD)
    base = ["publish", "--store", store, "--dataset", "d", "--source", str(changelog), "--once"]
    assert main([*base, "--schema", str(schema)]) == 0
    assert Dataset.open(store, "d").manifest(1).schema.to_json() == DECLARED
    append_lines(changelog, ['{"key": 9, "value": {"title": 9}}'])
    assert main([*base, "--schema", str(schema)]) == 1
    assert f"{changelog} line 4: field 'title' is int64" in capsys.readouterr().err
    for text, why in [("[1", "Expecting"), ("{}", "a JSON array of"),
                      ('[{"name": "id", "type": "int64"}, {"name": "x", "type": "float32"}]', "float32")]:
        schema.write_text(text)
        assert main([*base, "--schema", str(schema)]) == 2  # a configuration error
        assert f"--schema {schema}: " in (err := capsys.readouterr().err) and why in err
    assert main([*base, "--schema", str(tmp_path / "absent.json")]) == 2
    assert "cannot read it" in capsys.readouterr().err



def test_a_kafka_record_that_does_not_fit_is_named_by_partition_and_offset(kafka_broker: KafkaBroker,
                                                                           tmp_path: Path) -> None:
    topic = unique("declared")
    kafka_broker.create_topic(topic, partitions=1, config=RESUMABLE)
    produce_raw(kafka_broker.bootstrap, topic, [(b"1", b'{"title": "a"}'), (b"2", b'{"title": "b", "score": "high"}'),
                                  (b"3", b'{"title": "c"}')])
    dataset = Dataset.open(str(tmp_path), "d")
    for on_bad_record in ("fail", "skip"):
        with KafkaSource(f"kafka://{kafka_broker.bootstrap}/{topic}", dataset="d", timeout=10) as source:
            publisher = Publisher(dataset, source, PublishOptions(schema=ARROW, on_bad_record=on_bad_record))
            if on_bad_record == "fail":
                with pytest.raises(BadRecordError, match=f"topic {topic} partition 0 offset 1: field 'score' is "
                                                         "string, which the declared float64 does not hold"):
                    publisher.run_cycle()
                assert dataset.announced().version is None
            else:
                assert publisher.run_cycle().bad_records == 1
    with Consumer(str(tmp_path), "d") as consumer:
        assert [consumer.get(k) and consumer.get(k)["title"] for k in (1, 2, 3)] == ["a", None, "c"]
