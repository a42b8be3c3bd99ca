"""The on-storage contract: manifests, blob codec, state checksum, hash index, deltas."""

from __future__ import annotations

import json
import zlib
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from combe.format import cores
from combe.format.checksum import state_checksum
from combe.format.codec import decode_blob, encode_table, sha256_hex
from combe.format.delta import ADDED, REMOVED, UPDATED, apply_delta, make_delta
from combe.format.errors import CombeError, FormatError, IntegrityError
from combe.format.index import build_index, hash_keys, key_bytes, key_hash, with_index, split_index
from combe.format.manifest import BlobRef, Manifest, Pointer, parse_time, utc_now
from combe.format.schema import Schema

PATH = "memory://store/movies/versions/000000000002.json"
SHA = "ab" * 32


def make_manifest(**overrides: object) -> Manifest:
    fields: dict[str, object] = dict(
        dataset="movies", version=2, parent=1, created_at="2024-01-01T00:00:00.000000Z", producer="host:1:abc",
        schema=Schema("id", "int64", {"title": "string", "year": "int64", "tags": "json", "score": "float64"}),
        value_format="json", record_count=3, state_checksum="h128:" + "0" * 32, snapshot_version=1,
        snapshot=None,
        delta=BlobRef(f"blobs/delta-1-2-{'a' * 32}.arrow.zst", 120, SHA, 2),
        reverse=BlobRef(f"blobs/reverse-2-1-{'a' * 32}.arrow.zst", 110, SHA, 2),
        source_uri="file:///data/movies.jsonl", positions={"/data/movies.jsonl": {"0": 4096}},
        changes={"messages": 5, "added": 1, "updated": 1, "removed": 0, "unchanged": 3, "bad_records": 0},
    )
    fields.update(overrides)
    return Manifest(**fields)  # type: ignore[arg-type]


def document() -> dict:
    return json.loads(make_manifest().to_json())


def encoded(doc: object) -> bytes:
    return json.dumps(doc).encode()


# -- manifests -----------------------------------------------------------------------------


def test_manifest_round_trip() -> None:
    manifest = make_manifest()
    again = Manifest.from_json(manifest.to_json(), PATH)
    assert again == manifest
    snapshot = make_manifest(version=1, parent=None, snapshot_version=1, delta=None, reverse=None,
                             snapshot=BlobRef(f"blobs/snapshot-1-{'b' * 32}.arrow.zst", 300, SHA, 3))
    assert Manifest.from_json(snapshot.to_json(), PATH) == snapshot


def test_pointer_round_trip_and_serving() -> None:
    pointer = Pointer("movies", 5, "2024-01-01T00:00:00.000000Z", "host:1", pin=3)
    again = Pointer.from_json(pointer.to_json(), "announced.json")
    assert again == pointer and again.serving == 3
    assert Pointer("movies", 5, "t", "p").serving == 5


@pytest.mark.parametrize("text", ["2024-01-01T00:00:00Z", "2024-01-01 00:00:00.000000", "yesterday", "",
                                  "2024-01-01T00:00:00.000000+00:00", "2024-13-01T00:00:00.000000Z"])
def test_times_in_another_form_are_refused(text: str) -> None:
    doc = document()
    doc["created_at"] = text
    expect_format_error(encoded(doc), "'created_at'", "not a UTC time")
    pointer = json.loads(Pointer("movies", 5, utc_now(), "host:1").to_json())
    pointer["at"] = text
    with pytest.raises(FormatError, match="'at'.*not a UTC time"):
        Pointer.from_json(encoded(pointer), "announced.json")


def test_the_time_written_is_the_time_read() -> None:
    before = datetime.now(timezone.utc)
    written = utc_now()
    assert before <= parse_time(written) <= datetime.now(timezone.utc)


def expect_format_error(data: bytes, *fragments: str) -> FormatError:
    """The document is refused with one FormatError that names the path and the given fragments."""
    with pytest.raises(FormatError) as caught:
        Manifest.from_json(data, PATH)
    message = str(caught.value)
    assert PATH in message, message
    for fragment in fragments:
        assert fragment in message, message
    return caught.value


def test_malformed_json_is_a_format_error() -> None:
    expect_format_error(b"{not json", "not valid JSON")
    expect_format_error(b"", "not valid JSON")
    expect_format_error(b"\xff\xfe garbage", "not valid JSON")


def test_truncated_manifest_is_a_format_error() -> None:
    data = make_manifest().to_json()
    for cut in (1, len(data) // 3, len(data) // 2, len(data) - 3):
        expect_format_error(data[:cut])


def test_format_version_1_manifests_are_read_with_their_sha256_checksum() -> None:
    doc = document()
    doc["format_version"], doc["state_checksum"] = 1, "sha256:" + "ab" * 32
    assert Manifest.from_json(encoded(doc), "m.json").format_version == 1
    doc["state_checksum"] = "h128:" + "0" * 32
    expect_format_error(encoded(doc), "state_checksum")
    doc["format_version"], doc["state_checksum"] = 2, "sha256:" + "ab" * 32
    expect_format_error(encoded(doc), "state_checksum")
    doc["format_version"], doc["state_checksum"] = 1, "sha256:" + "ab" * 32
    doc["schema"].append({"name": "labels", "type": "list<string>"})
    expect_format_error(encoded(doc), "nested")


def test_not_an_object() -> None:
    expect_format_error(b"[1, 2, 3]", "JSON object")
    expect_format_error(b"null", "JSON object")


def test_unknown_format_version() -> None:
    doc = document()
    doc["format_version"] = 4
    expect_format_error(encoded(doc), "format_version 4", "Upgrade combe")
    doc["format_version"] = 3  # a sharded dataset's version where a chain's manifest was expected
    expect_format_error(encoded(doc), "format_version 3", "a version of a sharded dataset")
    doc["format_version"] = "1"
    expect_format_error(encoded(doc), "format_version")
    doc["format_version"] = True
    expect_format_error(encoded(doc), "format_version")
    del doc["format_version"]
    expect_format_error(encoded(doc), "format_version", "missing")


@pytest.mark.parametrize("field", ["dataset", "version", "created_at", "producer", "key", "schema",
                                   "value_format", "record_count", "state_checksum", "snapshot_version",
                                   "blobs", "source", "changes"])
def test_missing_field(field: str) -> None:
    doc = document()
    del doc[field]
    expect_format_error(encoded(doc), repr(field), "missing")


@pytest.mark.parametrize("path, value", [
    (("version",), "2"),
    (("version",), 2.0),
    (("parent",), "1"),
    (("record_count",), True),
    (("dataset",), 7),
    (("key",), "id"),
    (("key", "type"), 5),
    (("key", "field"), None),
    (("schema",), {"id": "int64"}),
    (("blobs",), []),
    (("blobs", "delta"), "blobs/delta"),
    (("blobs", "delta", "bytes"), "120"),
    (("blobs", "delta", "sha256"), 12),
    (("source",), "file:///x"),
    (("source", "positions"), [1]),
    (("changes",), [1, 2]),
    (("schema_change",), "yes"),
])
def test_wrong_type(path: tuple[str, ...], value: object) -> None:
    doc = document()
    target = doc
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    expect_format_error(encoded(doc), path[-1])


@pytest.mark.parametrize("schema", [
    ["id"],
    [{"name": "id", "type": "int64"}, "title"],
    [{"name": "id", "type": "int64"}, {"name": "title", "type": "decimal"}],
    [{"name": "id", "type": "int64"}, {"name": "id", "type": "string"}],
    [{"name": "title", "type": "string"}],
    [],
])
def test_bad_schema(schema: list) -> None:
    doc = document()
    doc["schema"] = schema
    expect_format_error(encoded(doc), "schema")


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "blobs/../../x.arrow.zst", "blobs/delta-1-2-zz.arrow.zst",
                                 f"blobs/delta-1-2-{'a' * 32}.arrow.zst/../../x"])
def test_bad_blob_path(bad: str) -> None:
    doc = document()
    doc["blobs"]["delta"]["path"] = bad
    error = expect_format_error(encoded(doc), "blobs.delta.path", repr(bad))
    assert error.path == PATH


@pytest.mark.parametrize("name", ["../x", "", "a/b", ".hidden"])
def test_bad_dataset_name_in_manifest(name: str) -> None:
    doc = document()
    doc["dataset"] = name
    error = expect_format_error(encoded(doc), "dataset")
    assert isinstance(error, FormatError)


@pytest.mark.parametrize("change, fragment", [
    ({"version": 0}, "version"),
    ({"parent": 2}, "parent"),
    ({"snapshot_version": 3}, "snapshot_version"),
    ({"record_count": -1}, "record_count"),
    ({"value_format": "avro"}, "value_format"),
    ({"key": {"field": "id", "type": "uuid"}}, "key.type"),
])
def test_cross_field_rules(change: dict, fragment: str) -> None:
    doc = document()
    doc.update(change)
    expect_format_error(encoded(doc), fragment)


def test_bad_sha256() -> None:
    doc = document()
    doc["blobs"]["reverse"]["sha256"] = "not-hex"
    expect_format_error(encoded(doc), "sha256")


def test_fuzzed_documents_only_raise_format_errors() -> None:
    """Replacing any one value anywhere with odd JSON never escapes as KeyError/TypeError/AttributeError."""
    weird: list[object] = [None, 0, -1, "", "x", [], {}, [None], {"a": None}, True, 1.5]

    def paths(node: object, prefix: tuple) -> list[tuple]:
        found = [prefix] if prefix else []
        if isinstance(node, dict):
            for name, child in node.items():
                found += paths(child, prefix + (name,))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                found += paths(child, prefix + (index,))
        return found

    base = document()
    for path in paths(base, ()):
        for value in weird:
            doc = document()
            target = doc
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = value
            try:
                Manifest.from_json(encoded(doc), PATH)
            except FormatError as exc:
                assert PATH in str(exc), (path, value, str(exc))
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{path}={value!r} raised {type(exc).__name__}: {exc}")


def test_pointer_validation() -> None:
    good = json.loads(Pointer("movies", 5, "t", "p", 3).to_json())
    for change in ({"version": 0}, {"pin": 6}, {"pin": 0}, {"version": "5"}, {"dataset": "../x"}):
        doc = {**good, **change}
        with pytest.raises(FormatError, match="announced.json"):
            Pointer.from_json(encoded(doc), "announced.json")
    with pytest.raises(FormatError, match="announced.json"):
        Pointer.from_json(b'{"format_version": 1, "dataset": "mov', "announced.json")


# -- codec -------------------------------------------------------------------------------


def sample_table() -> pa.Table:
    return pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "title": pa.array(["Alien", None, "Heat"]),
        "score": pa.array([8.5, 7.0, None]),
        "seen": pa.array([True, None, False]),
        "raw": pa.array([b"\x00\x01", b"", None], pa.binary()),
    })


def test_codec_round_trip() -> None:
    table = sample_table()
    blob = encode_table(table)
    assert blob[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    decoded = decode_blob(blob, sha256_hex(blob), path="blobs/x")
    assert decoded.equals(table)
    assert decoded.num_rows == 3


def test_codec_round_trip_empty_table() -> None:
    table = sample_table().slice(0, 0)
    blob = encode_table(table)
    assert decode_blob(blob, sha256_hex(blob), path="blobs/x").equals(table)


def test_one_flipped_byte_is_an_integrity_error() -> None:
    blob = encode_table(sample_table())
    recorded = sha256_hex(blob)
    for position in (0, len(blob) // 2, len(blob) - 1):
        corrupted = bytearray(blob)
        corrupted[position] ^= 0x01
        with pytest.raises(IntegrityError, match="blobs/delta-1-2") as caught:
            decode_blob(bytes(corrupted), recorded, path="blobs/delta-1-2")
        assert caught.value.path == "blobs/delta-1-2"


def test_flipped_byte_caught_without_the_sha256_too() -> None:
    """The zstd frame checksum is a second line of defence (a cached or re-hashed blob)."""
    blob = bytearray(encode_table(sample_table()))
    blob[len(blob) // 2] ^= 0x40
    with pytest.raises(FormatError):
        decode_blob(bytes(blob), sha256_hex(bytes(blob)), path="blobs/x")


def test_not_a_blob() -> None:
    for data in (b"", b"hello", b"\x28\xb5\x2f\xfd" + b"\x00" * 10):
        with pytest.raises(FormatError, match="blobs/x"):
            decode_blob(data, sha256_hex(data), path="blobs/x")


# -- state checksum ------------------------------------------------------------------------


def test_state_checksum_independent_of_chunking() -> None:
    table = sample_table()
    one = state_checksum(table)
    rechunked = pa.Table.from_batches(table.to_batches(max_chunksize=1))
    assert rechunked.column(0).num_chunks == 3
    assert state_checksum(rechunked) == one
    sliced = pa.concat_tables([table.slice(0, 2), table.slice(2)])
    assert state_checksum(sliced) == one
    # Offsets into a larger buffer and bytes hidden under null slots do not matter either.
    bigger = pa.concat_tables([sample_table().slice(1, 1), table]).combine_chunks().slice(1)
    assert state_checksum(bigger) == one
    titles = pa.array(["Alien", "GARBAGE", "Heat"])
    validity = pa.array([True, False, True]).buffers()[1]
    masked_titles = pa.Array.from_buffers(pa.string(), 3, [validity, *titles.buffers()[1:]])
    assert masked_titles.to_pylist() == ["Alien", None, "Heat"]
    assert state_checksum(table.set_column(1, "title", masked_titles)) == one


def test_state_checksum_sees_content() -> None:
    table = sample_table()
    one = state_checksum(table)
    assert one.startswith("h128:")
    changed = table.set_column(1, "title", pa.array(["Alien", None, "Heap"]))
    assert state_checksum(changed) != one
    nulled = table.set_column(2, "score", pa.array([8.5, None, None]))
    assert state_checksum(nulled) != one
    renamed = table.rename_columns(["id", "name", "score", "seen", "raw"])
    assert state_checksum(renamed) != one
    assert state_checksum(table.slice(0, 2)) != one


def test_state_checksum_ignores_the_index_columns() -> None:
    table = sample_table().select(["id", "title"])
    assert state_checksum(with_index(table, "id", "int64")) == state_checksum(table)


# -- index -------------------------------------------------------------------------------


STRING_KEYS = ["", "a", "movie-123", "é", "日本語のキー", "x" * 300, "\x00nul"]
INT_KEYS = [0, 1, -1, 42, 2**31, -(2**31), 2**63 - 1, -(2**63), 123456789012]


def test_hash_keys_matches_zlib_crc32_for_strings() -> None:
    hashes = hash_keys(pa.array(STRING_KEYS), "string")
    assert hashes.tolist() == [zlib.crc32(key.encode()) for key in STRING_KEYS]
    assert [key_hash(key_bytes(key, "string")) for key in STRING_KEYS] == hashes.tolist()
    # a sliced array (non-zero offset) hashes the same keys
    assert hash_keys(pa.array(STRING_KEYS).slice(2), "string").tolist() == hashes.tolist()[2:]


def test_hash_keys_matches_zlib_crc32_for_int64() -> None:
    hashes = hash_keys(pa.array(INT_KEYS, pa.int64()), "int64")
    assert hashes.tolist() == [zlib.crc32(k.to_bytes(8, "little", signed=True)) for k in INT_KEYS]
    assert [key_hash(key_bytes(key, "int64")) for key in INT_KEYS] == hashes.tolist()


def test_hash_keys_of_many_keys_of_every_length_on_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores, "CORES", 3)
    rng = np.random.default_rng(3)
    # Every key's characters drawn in one call and cut to its length: a draw per key took 3.5 s of the test's 4.
    lengths = rng.integers(0, 20, 100_000).tolist()
    chars, ends = rng.choice(list("abé€9"), sum(lengths)).tolist(), np.cumsum(lengths).tolist()
    keys = ["".join(chars[end - n:end]) for end, n in zip(ends, lengths)]
    array = pa.array(keys)
    assert hash_keys(array, "string").tolist() == [zlib.crc32(key.encode()) for key in keys]
    assert hash_keys(array.slice(7), "string").tolist() == [zlib.crc32(key.encode()) for key in keys[7:]]
    ints = rng.integers(-2**63, 2**63 - 1, 100_000, dtype=np.int64)
    assert hash_keys(pa.array(ints), "int64").tolist() == [
        zlib.crc32(int(k).to_bytes(8, "little", signed=True)) for k in ints.tolist()]


def test_hash_keys_empty() -> None:
    assert len(hash_keys(pa.array([], pa.string()), "string")) == 0
    assert len(hash_keys(pa.array([], pa.int64()), "int64")) == 0


@pytest.mark.parametrize("keys, key_type", [(STRING_KEYS, "string"), (INT_KEYS, "int64"),
                                            ([f"k{i}" for i in range(1000)], "string")])
def test_index_finds_every_key_in_its_bucket(keys: list, key_type: str) -> None:
    array = pa.array(sorted(keys), pa.string() if key_type == "string" else pa.int64())
    table = with_index(pa.table({"key": array}), "key", key_type)
    data, rows, ends = split_index(table)
    assert data.column_names == ["key"]
    assert rows is not None and ends is not None
    assert sorted(rows.tolist()) == list(range(len(keys)))
    assert ends[-1] == len(keys)
    count = len(keys)
    for row, key in enumerate(array.to_pylist()):
        bucket = (zlib.crc32(key_bytes(key, key_type)) * count) >> 32
        start = ends[bucket - 1] if bucket else 0
        assert row in rows[start:ends[bucket]].tolist()


def test_build_index_types() -> None:
    rows, ends = build_index(pa.array(["a", "b", "c"]), "string")
    assert rows.type == pa.int32() and ends.type == pa.int32()
    assert np.all(np.diff(ends.to_numpy()) >= 0)


# -- deltas ------------------------------------------------------------------------------


SCHEMA = Schema("key", "string", {"x": "int64"})


def state_of(rows: dict[str, int]) -> pa.Table:
    return pa.Table.from_pylist([{"key": k, "x": v} for k, v in sorted(rows.items())], schema=SCHEMA.to_arrow())


def delta_of(changes: list[tuple[str, int | None, int]]) -> pa.Table:
    rows = pa.Table.from_pylist([{"key": k, "x": v} for k, v, _ in changes], schema=SCHEMA.to_arrow())
    return make_delta(rows, [op for _, _, op in changes], SCHEMA)


def test_apply_delta() -> None:
    state = state_of({"a": 1, "b": 2, "c": 3})
    delta = delta_of([("d", 4, ADDED), ("b", 20, UPDATED), ("a", None, REMOVED)])
    result = apply_delta(state, delta, SCHEMA)
    assert result.to_pylist() == [{"key": "b", "x": 20}, {"key": "c", "x": 3}, {"key": "d", "x": 4}]
    assert state_checksum(result) == state_checksum(state_of({"b": 20, "c": 3, "d": 4}))


@pytest.mark.parametrize("change", [("a", 9, ADDED), ("z", 9, UPDATED), ("z", None, REMOVED)])
def test_apply_delta_rejects_a_delta_that_does_not_fit(change: tuple) -> None:
    state = state_of({"a": 1, "b": 2})
    with pytest.raises(IntegrityError, match="does not fit"):
        apply_delta(state, delta_of([("b", 5, UPDATED), change]), SCHEMA, what="delta blobs/d")


def test_errors_share_one_root() -> None:
    assert issubclass(FormatError, CombeError) and issubclass(IntegrityError, FormatError)
    assert issubclass(FormatError, ValueError)
