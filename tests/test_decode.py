"""Bulk decoding (Arrow's JSON reader) against the per-record path: the same lines, the same outcome.

Every publish here runs twice on the same lines, once through the bulk path
and once with every record decoded one by one (the reference); both must
accept and refuse the same records, name the same places, and publish the
same rows, schema and checksum.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import combe.format.jsontext as jsontext
import combe.producer.decode as decode
import combe.producer.held as held
from combe.format.checksum import legacy_state_checksum
from combe.format.codec import encode_table, sha256_hex
from combe.format.dataset import Dataset
from combe.format.errors import BadRecordError, ValidationError
from combe.format.index import with_index
from combe.format.manifest import BlobRef, Manifest, Pointer, utc_now
from combe.format.schema import Schema
from combe.producer import PublishOptions, Publisher, RecordFormat, open_source
from combe.producer.sources.base import Messages, Positions, Source
from combe.producer.state import load_state
from combe.producer.validators import Limits
from tests.support.properties import examples

OPTIONS = dict(limits=Limits(max_removed=None, max_added=None, allow_empty_keys=True))


def run(path: Path, *, bulk: bool, key_type: str = "string", delimiter: str | None = None,
        value_format: str = "json", skip: bool = True) -> dict[str, Any]:
    """Publish ``path`` into a fresh store; what came out, in a comparable form."""
    store = f"memory://decode-{uuid.uuid4().hex}"
    try:
        dataset = Dataset.open(store, "d")
        options = PublishOptions(fmt=RecordFormat(key_type=key_type, value_format=value_format),
                                 on_bad_record="skip" if skip else "fail", **OPTIONS)
        publisher = Publisher(dataset, open_source(str(path), key_delimiter=delimiter), options)
        publisher.bulk = bulk
        try:
            result = publisher.run_cycle()
        except (BadRecordError, ValidationError) as exc:
            return {"error": str(exc)}
        outcome: dict[str, Any] = {"outcome": result.outcome, "messages": result.messages,
                                   "bad": result.bad_records}
        if result.version is not None:
            manifest = dataset.manifest(result.version)
            table = load_state(dataset, manifest).table()
            outcome.update(schema=manifest.schema.to_json(), checksum=manifest.state_checksum,
                           rows=table.to_pylist(), counts=manifest.changes)
        return outcome
    finally:
        root = "/" + store.removeprefix("memory://")
        fs = fsspec.filesystem("memory")
        if fs.exists(root):
            fs.rm(root, recursive=True)


def both(path: Path, **options: Any) -> dict[str, Any]:
    bulk, reference = run(path, bulk=True, **options), run(path, bulk=False, **options)
    assert bulk == reference
    return bulk


# -- lines that read differently with a lenient reader --------------------------------------------------

ODD_LINES = [
    b'{"key": "a", "value": {"x": 1}}',
    b'{"key": "b"}',                                  # no "value": not a tombstone
    b'{"key": "c", "value": null}',                   # a tombstone
    b'   ',                                           # blank but not empty: not JSON
    b'null',                                          # not an object (Arrow's reader crashes on it first)
    b'{"key": "d", "value": {"x": 2}} {"key": "e", "value": {"x": 3}}',  # two values on one line
    b'{"key": "f", "value": {"x": NaN}}',
    b'{"key": "g", "value": {"x": 1e400}}',
    b'{"key": "h", "value": {"x": 18446744073709551616}}',  # beyond 64 bits: never a float
    b'{"key": "i", "value": {"y": 9223372036854775808}}',
    b'{"key": "j", "value": {"z": "\\ud800"}}',
    b'{"key": "k", "value": {"z": "\\udc00x"}}',
    b'{"key": "l", "value": {"z": "a\tb"}}',          # a raw control character in a string
    b'{"key": "m", "value": {"x": 1, "x": 2}}',       # a duplicate field: the last wins, as in JSON parsers
    b'{"key": "n", "value": {"w": [1, "a"]}}',        # no common item type
    b'{"key": "o", "value": {"w": [1, 2.5]}}',
    b'{"key": "p", "value": {"key": "p", "v": 1}}',   # the value's own key field agrees
    b'{"key": "q", "value": {"key": "other"}}',       # ... or not
    b'{"key": "r", "value": {"key": null}}',
    b'{"key": "", "value": {"x": 5}}',                # an empty key (validators decide)
    b'{"key": 7, "value": {"x": 6}}',                 # a number as a string key
    b'{"key": "s", "value": {"t": "2020-01-01"}}',    # text that looks like a date stays text
    b'{"key": "u", "value": {"__combe_x": 1}}',
    b'{"key": "v", "value": {"x": "\xff"}}',          # not UTF-8
    b'{"key": "w", "value": [1]}',
    b'{"key": "x", "value": {"e": [], "n": [null, null], "o": {}}}',
    b'{"key": "y", "value": {"x": 1.5}}',             # a float after ints: the column becomes float64
    b'{"key": "z", "value": ' + b'[' * 2000 + b']' * 2000 + b'}',
    b'{"key": "deep", "value": {"d": ' + b'{"a": ' * 40 + b'1' + b'}' * 40 + b'}}',
    b'{"key": "dup", "value": {"x": 7}}',
    b'{"key": "dup", "value": {"x": 8}}',
    b'{"value": {"x": 9}}',
    b'{"key": "run-on", "value":',                   # an object that runs on over the next line:
    b'{"x": 10}}',                                    # ... two bad lines, not one record
]


@pytest.mark.parametrize("skip", [True, False], ids=["skip", "fail"])
@pytest.mark.parametrize("count", [1, len(ODD_LINES)])
def test_odd_lines_decode_alike(tmp_path: Path, skip: bool, count: int) -> None:
    for start in range(0, len(ODD_LINES), count):
        path = tmp_path / f"lines-{start}.jsonl"
        path.write_bytes(b"\n".join(ODD_LINES[start:start + count]) + b"\n")
        both(path, skip=skip)


def test_the_odd_lines_are_refused_or_kept_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"\n".join(ODD_LINES) + b"\n")
    found = both(path)
    rows = {row["key"]: row for row in found["rows"]}
    assert set(rows) == {"a", "o", "p", "", "7", "s", "x", "y", "dup", "m"}  # "deep" nests 41 levels
    assert rows["dup"]["x"] == 8.0 and rows["m"]["x"] == 2.0 and rows["s"]["t"] == "2020-01-01"
    assert rows["o"]["w"] == [1.0, 2.5] and rows["x"]["n"] == [None, None]
    # Every other line is bad but "c" (a tombstone of nothing) and the first "dup" (superseded).
    assert found["bad"] == len(ODD_LINES) - len(rows) - 2
    assert dict((c["name"], c["type"]) for c in found["schema"])["x"] == "float64"
    path.write_bytes(b"\n".join(ODD_LINES[:5]) + b"\n")
    assert "line 2: the line has no \"value\" field" in both(path, skip=False)["error"]


def test_an_object_running_on_over_lines_is_two_bad_lines_even_when_the_row_count_agrees(tmp_path: Path) -> None:
    """Arrow's reader reads lines 1-2 as one object and line 3 as two: three rows for three lines. Each line is
    bad, and named; nothing of them is published."""
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b'{"key": "a", "value":\n{"x": 1}}\n{"key": "b", "value": {"x": 2}} {"key": "c", "value": {}}\n'
                     b'{"key": "d", "value": {"x": 4}}\n')
    found = both(path)
    assert [row["key"] for row in found["rows"]] == ["d"] and found["bad"] == 3
    assert "lines.jsonl line 1:" in both(path, skip=False)["error"]
    topic = [[(b"a", b'{"x":'), (b"b", b'{"y": 1}}'), (b"c", b'{"x": 3} {"x": 4}'), (b"d", b'{"x": 5}')]]
    for bulk in (True, False):
        outcome = run_topic(topic, bulk=bulk, key_type="string", value_format="json", skip=True)
        assert [row["key"] for row in outcome["rows"]] == ["d"] and outcome["bad"] == 3, bulk


@pytest.mark.parametrize("orjson", [True, False], ids=["orjson", "stdlib"])
def test_one_behaviour_whichever_json_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, orjson: bool) -> None:
    """issue 15 item 7: the stdlib path refuses what orjson refuses, a 10,000-deep value with a clear error."""
    if not orjson:
        monkeypatch.setattr(jsontext, "loads_record", jsontext._stdlib_loads_checked)
        import combe.producer.records as records
        monkeypatch.setattr(records, "loads_record", jsontext._stdlib_loads_checked)
    deep = b'{"key": "deep", "value": {"d": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}"
    for line, reason in [(deep, "deeper than"), (b'{"key": "i", "value": {"x": 1e400}}', ""),
                         (b'{"key": "b", "value": {"x": 18446744073709551616}}', "int64"),
                         (b'{"key": "n", "value": {"x": NaN}}', ""), (b'{"key": "", "value": {"x": 1}}', None)]:
        path = tmp_path / "line.jsonl"
        path.write_bytes(b'{"key": "a", "value": {"x": 1}}\n' + line + b"\n")
        found = both(path, skip=False)
        if reason is None:
            assert found["outcome"] == "published"
            continue
        assert f"{path} line 2" in found["error"] and reason in found["error"], found


def test_an_empty_key_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    path.write_bytes(b'{"key": "a", "value": {"x": 1}}\n{"key": "", "value": {"x": 2}}\n')
    dataset = Dataset.open(str(tmp_path / "store"), "d")
    with pytest.raises(ValidationError, match=f"empty key .*{path} line 2"):
        Publisher(dataset, open_source(str(path))).run_cycle()


# -- any lines ---------------------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=4) | st.sampled_from(["2020-01-01", "12:00:00", "2020-01-01T00:00:00"])
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["a", "b", "key", "c d", "__combe_z"]), inner, max_size=3),
                           max_leaves=8)
texts = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=12),
    st.sampled_from([b"", b"   ", b"null", b"{", b'{"a": 1} {"a": 2}', b'{"x": NaN}', b'{"x": "\\ud800"}']),
)


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    """A JSONL line: mostly well-formed records of any JSON value, sometimes anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(texts)
    key = draw(st.sampled_from(["a", "b", "c", "", 7, None, [1]]))
    record: dict[str, Any] = {"key": key}
    shape = draw(st.integers(0, 9))
    if shape < 7:
        record["value"] = draw(st.dictionaries(st.sampled_from(["x", "y", "key", "l", "o"]), json_values, max_size=3))
    elif shape < 9:
        record["value"] = None
    return json.dumps(record).encode()


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(lines(), max_size=12), key_type=st.sampled_from(["string", "int64"]),
       skip=st.booleans())
def test_any_lines_decode_alike(tmp_path_factory: pytest.TempPathFactory, body: list[bytes], key_type: str,
                                skip: bool) -> None:
    path = tmp_path_factory.mktemp("lines") / "changes.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in body) + b"\n")
    both(path, key_type=key_type, skip=skip)


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(st.tuples(st.sampled_from([b"a", b"7", b"", b"-1", b"\xff", b"007"]),
                               st.one_of(texts, json_values.map(lambda v: json.dumps(v).encode()))), max_size=12),
       key_type=st.sampled_from(["string", "int64"]), value_format=st.sampled_from(["json", "json", "string", "bytes"]))
def test_any_kcat_lines_decode_alike(tmp_path_factory: pytest.TempPathFactory, body: list[tuple[bytes, bytes]],
                                     key_type: str, value_format: str) -> None:
    path = tmp_path_factory.mktemp("kcat") / "changes.txt"
    path.write_bytes(b"".join(key + b"|" + value.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n"
                              for key, value in body))
    both(path, key_type=key_type, delimiter="|", value_format=value_format)


class Topic(Source):
    """Messages as a Kafka topic hands them over, in the given batches: only the latest of a key is decoded."""

    uri = "kafka://test/t"
    latest_only = True
    no_key_hint = "a Kafka message without a key"

    def __init__(self, batches: list[list[tuple[bytes | None, bytes | None]]]) -> None:
        self.batches = batches

    def read(self, positions: Positions) -> Iterator[Messages]:
        offset = 0
        for batch in self.batches:
            offsets = np.arange(offset, offset + len(batch), dtype=np.int64)
            offset += len(batch)
            yield Messages("t", [key for key, _ in batch], [value for _, value in batch],
                           np.zeros(len(batch), np.int64), offsets, {"0": offset}, len(batch))

    def describe(self, stream: str, partition: int, offset: int) -> str:
        return f"topic {stream} partition {partition} offset {offset}"


def run_topic(batches: list[list[tuple[bytes | None, bytes | None]]], *, bulk: bool, key_type: str,
              value_format: str, skip: bool, ahead: bool = True) -> dict[str, Any]:
    dataset = Dataset.open(f"memory://decode-{uuid.uuid4().hex}", "d")
    options = PublishOptions(fmt=RecordFormat(key_type=key_type, value_format=value_format),
                             on_bad_record="skip" if skip else "fail", **OPTIONS)
    publisher = Publisher(dataset, Topic(batches), options)
    publisher.bulk, publisher.ahead = bulk, ahead
    try:
        result = publisher.run_cycle()
    except (BadRecordError, ValidationError) as exc:
        return {"error": str(exc)}
    outcome: dict[str, Any] = {"outcome": result.outcome, "messages": result.messages, "bad": result.bad_records}
    if result.version is not None:
        manifest = dataset.manifest(result.version)
        outcome.update(schema=manifest.schema.to_json(), checksum=manifest.state_checksum,
                       rows=load_state(dataset, manifest).table().to_pylist())
    return outcome


message_values = st.one_of(
    st.dictionaries(st.sampled_from(["x", "y", "key"]), json_values, max_size=3).map(lambda v: json.dumps(v).encode()),
    texts, st.none(), st.sampled_from([b"{}", b'{"a": 1}\n', b'{"a":\r2}', b'{"b": "x"}', b'{"a":', b'{"b": 1}}',
                                       b'{"a": 1} {"b": 2}']))


@settings(max_examples=examples(150), deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.sampled_from([b"a", b"7", b"07", b"", b"\xff", None]), message_values),
                                 min_size=1, max_size=6), max_size=4),
       key_type=st.sampled_from(["string", "int64"]), value_format=st.sampled_from(["json", "json", "json", "string"]),
       skip=st.booleans())
def test_any_kafka_messages_decode_alike(batches: list[list[tuple[bytes | None, bytes | None]]], key_type: str,
                                         value_format: str, skip: bool) -> None:
    """The latest message of each key, decoded from the batches' joined lines or record by record, ahead of
    the read's end or at it: tombstones, a value ``{}``, values holding line breaks, keyless messages, keys
    that decode alike."""
    options = dict(key_type=key_type, value_format=value_format, skip=skip)
    reference = run_topic(batches, bulk=False, ahead=False, **options)
    assert run_topic(batches, bulk=True, ahead=False, **options) == reference
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(held, "REPEATS", 1.0)  # decoded ahead however often keys repeat, then checked
        assert run_topic(batches, bulk=True, **options) == reference


@settings(max_examples=examples(100), deadline=None)
@given(messages=st.lists(st.tuples(st.sampled_from([b"a", b"7", b"07", b"", b"\xff", b"b", b"-0", b"x y"]),
                                   message_values), min_size=1, max_size=8, unique_by=lambda message: message[0]),
       cuts=st.lists(st.integers(0, 8), max_size=3), key_type=st.sampled_from(["string", "int64"]),
       value_format=st.sampled_from(["json", "json", "string"]), skip=st.booleans())
def test_distinct_keys_decoded_ahead_decode_alike(messages: list[tuple[bytes, bytes | None]], cuts: list[int],
                                                  key_type: str, value_format: str, skip: bool) -> None:
    """Every raw key distinct (so batches are decoded as they arrive, until a bad record drops the guess):
    the same outcome as decoding the latest messages at the read's end, keys that decode alike included."""
    bounds = [0, *sorted(min(cut, len(messages)) for cut in cuts), len(messages)]
    batches = [messages[start:stop] for start, stop in zip(bounds, bounds[1:]) if stop > start]
    options = dict(key_type=key_type, value_format=value_format, skip=skip)
    assert run_topic(batches, bulk=True, **options) == run_topic(batches, bulk=True, ahead=False, **options)


@settings(max_examples=examples(150), deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]), message_values),
                                 min_size=1, max_size=6), max_size=4), skip=st.booleans())
def test_superseded_messages_of_any_shape_decoded_ahead_change_nothing(
        batches: list[list[tuple[bytes | None, bytes | None]]], skip: bool) -> None:
    """Good keys repeating, values of any shape (fields and types a key's later message lacks, bad JSON):
    decoding ahead and taking out what the superseded messages brought is decoding the latest alone."""
    options = dict(key_type="string", value_format="json", skip=skip)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(held, "REPEATS", 1.0)
        assert run_topic(batches, bulk=True, **options) == run_topic(batches, bulk=True, ahead=False, **options)


def test_what_superseded_messages_decoded_ahead_brought_is_taken_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches are decoded as they arrive; at the read's end a superseded message's row loses in the fold and
    its bad record is dropped. The latest messages are decoded again at the end (and the outcome is the one
    of decoding them alone) where a superseded message brought a type, a latest message is bad, or keys
    repeat too often."""
    at_the_end: list[int] = []
    decode_latest = Publisher._decode_latest

    def spy(self: Publisher, decode: Any, parts: list[Any]) -> int:
        at_the_end.append(sum(len(part.keys) for part in parts))
        return decode_latest(self, decode, parts)

    def check(batches: list[list[tuple[bytes | None, bytes | None]]], *, ends: bool, skip: bool = False) -> dict:
        at_the_end.clear()
        outcome = run_topic(batches, bulk=True, key_type="string", value_format="json", skip=skip)
        assert bool(at_the_end) == ends
        assert outcome == run_topic(batches, bulk=True, key_type="string", value_format="json", skip=skip,
                                    ahead=False)
        return outcome

    monkeypatch.setattr(Publisher, "_decode_latest", spy)
    many = [[(f"k{i}".encode(), json.dumps({"x": i}).encode()) for i in range(start, start + 50)]
            for start in (0, 50, 100)]
    assert len(check(many, ends=False)["rows"]) == 150
    again = [*many, [(b"k3", b'{"x": -3}'), (b"k70", None)]]
    outcome = check(again, ends=False)
    assert len(outcome["rows"]) == 149 and {"key": "k3", "x": -3} in outcome["rows"]
    superseded_bad = [[(b"k3", b'{"x": '), *many[0][4:]], *many[1:], [(b"k3", b'{"x": 3}')]]
    assert check(superseded_bad, ends=False)["bad"] == 0
    brought_a_field = [[(b"k3", b'{"x": 1, "old": "y"}'), *many[0][4:]], *many[1:], [(b"k3", b'{"x": 3}')]]
    assert "old" not in check(brought_a_field, ends=True)["schema"]
    brought_a_float = [[(b"k3", b'{"x": 1.5}'), *many[0][4:]], *many[1:], [(b"k3", b'{"x": 3}')]]
    assert check(brought_a_float, ends=True)["schema"] == check(many, ends=False)["schema"]
    latest_bad = [*many, [(b"k3", b'{"x": ')]]
    assert check(latest_bad, ends=True, skip=True)["bad"] == 1
    often = [[(f"k{i % 40}".encode(), json.dumps({"x": i}).encode()) for i in range(start, start + 50)]
             for start in (0, 50, 100)]
    assert len(check(often, ends=True)["rows"]) == 40


def test_kafka_values_reach_the_json_reader_in_pieces_of_join_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A piece of latest values is read in runs of about JOIN_BYTES (a joined buffer stays under 2 GiB)."""
    monkeypatch.setattr(decode, "JOIN_BYTES", 64)
    reads: list[int] = []
    lines_part = decode.Decode._lines_part

    def spy(self: decode.Decode, keys: pa.Array, *rest: Any) -> pa.Table:
        reads.append(len(keys))
        return lines_part(self, keys, *rest)

    monkeypatch.setattr(decode.Decode, "_lines_part", spy)
    batches = [[(f"k{i}".encode(), None if i % 7 == 3 else json.dumps({"x": i, "s": "y" * i}).encode())
                for i in range(start, start + 10)] for start in (0, 10, 20)]
    bulk = run_topic(batches, bulk=True, key_type="string", value_format="json", skip=False)
    assert len(reads) > 3 and sum(reads) == 30
    assert bulk == run_topic(batches, bulk=False, key_type="string", value_format="json", skip=False)
    assert len(bulk["rows"]) == 26


def test_a_format_version_1_dataset_with_a_json_column_is_continued(tmp_path: Path) -> None:
    """A dataset an older combe published (sha256 checksum, nested values as JSON text) takes new versions:
    its json column keeps taking any JSON value as canonical text, and the new manifests are version 2."""
    schema = Schema("key", "string", {"title": "string", "tags": "json"})
    table = pa.Table.from_arrays([pa.array(["a", "b"]), pa.array(["A", "B"]), pa.array(['[1,"x"]', None])],
                                 schema=schema.to_arrow())
    dataset = Dataset.open(str(tmp_path / "store"), "d")
    data = encode_table(with_index(table, "key", "string"))
    path = "blobs/snapshot-1-" + "0" * 32 + ".arrow.zst"
    dataset.write_blob(path, data)
    manifest = Manifest("d", 1, None, utc_now(), "old", schema, "json", 2, legacy_state_checksum(table), 1,
                        BlobRef(path, len(data), sha256_hex(data), 2), None, None, "file://old", {},
                        format_version=1)
    assert dataset.create_manifest(manifest)
    dataset.announce(Pointer("d", 1, utc_now(), "old"), None)
    changes = tmp_path / "changes.jsonl"
    changes.write_text('{"key": "b", "value": {"title": "B", "tags": {"z": 1.0, "a": [1, 2.5]}}}\n'
                       '{"key": "c", "value": {"title": "C", "tags": 7}}\n')
    for bulk in (True, False):
        store = tmp_path / f"copy-{bulk}"
        shutil.copytree(tmp_path / "store", store)
        copy = Dataset.open(str(store), "d")
        publisher = Publisher(copy, open_source(str(changes)))
        publisher.bulk = bulk
        assert publisher.run_cycle().version == 2
        second = copy.manifest(2)
        assert second.format_version == 2 and second.state_checksum.startswith("h128:")
        assert second.schema.columns == {"title": "string", "tags": "json"}
        rows = load_state(copy, second).table().to_pylist()
        assert rows == [{"key": "a", "title": "A", "tags": '[1,"x"]'},
                        {"key": "b", "title": "B", "tags": '{"a":[1,2.5],"z":1}'},
                        {"key": "c", "title": "C", "tags": "7"}]
