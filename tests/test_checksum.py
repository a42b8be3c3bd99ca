"""The state checksum against an independent, value-by-value reading of docs/FORMAT.md."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from combe.format.checksum import (
    LANE_HI, LANE_LO, MASK64, NULL_ITEM, P, TAGS, advance, bytes_hash, digest_sum, fmix64, format_checksum,
    legacy_state_checksum, name_seed, parse_checksum, row_digests, sequence_hash, state_checksum,
)
from combe.format import checksum, cores
from combe.format.errors import FormatError
from combe.format.types import arrow_field, kind, list_item, map_types, struct_fields
from tests.support.properties import examples


def value_hash(value: Any, type_: str) -> int:
    """The hash of one Python value of a combe type, as the spec states it, one value at a time."""
    head = kind(type_)
    if head == "int64":
        return fmix64((value & MASK64) ^ TAGS["int64"])
    if head == "float64":
        return fmix64(struct.unpack("<Q", struct.pack("<d", value))[0] ^ TAGS["float64"])
    if head == "bool":
        return fmix64(int(value) ^ TAGS["bool"])
    if head in ("string", "json"):
        return bytes_hash(value.encode(), TAGS[head])
    if head == "binary":
        return bytes_hash(value, TAGS["binary"])
    if head == "list":
        item = list_item(type_)
        items = [NULL_ITEM if v is None else value_hash(v, item) for v in value]
        return sequence_hash(items, len(items), TAGS["list"])
    if head == "struct":
        total = sum(((value_hash(value[n], t) ^ name_seed(n)) * P) for n, t in struct_fields(type_)
                    if value.get(n) is not None) & MASK64
        return fmix64(total ^ TAGS["struct"])
    if head == "map":
        key_type, value_type = map_types(type_)
        total = sum(fmix64(value_hash(k, key_type) ^ (((NULL_ITEM if v is None else value_hash(v, value_type))
                                                        * P) & MASK64)) for k, v in value) & MASK64
        return fmix64(total ^ TAGS["map"])
    raise AssertionError(type_)


def reference_checksum(rows: list[dict[str, Any]], schema: dict[str, str]) -> str:
    total = 0
    for row in rows:
        digest = sum((value_hash(row[n], t) ^ name_seed(n)) * P for n, t in schema.items()
                     if row.get(n) is not None) & MASK64
        total += (fmix64(digest ^ LANE_HI) << 64) | fmix64(digest ^ LANE_LO)
    return format_checksum(total)


def table_of(rows: list[dict[str, Any]], schema: dict[str, str]) -> pa.Table:
    arrow = pa.schema([arrow_field(n, t) for n, t in schema.items()])
    return pa.Table.from_pylist(rows, schema=arrow)


SCHEMA = {
    "key": "string", "n": "int64", "x": "float64", "ok": "bool", "raw": "binary", "doc": "json", "nothing": "null",
    "tags": "list<string>", "grid": "list<list<int64>>", "point": "struct<x:float64,\"y z\":list<string>>",
    "attrs": "map<string,int64>",
}

texts = st.text(max_size=40)
rows_strategy = st.lists(st.fixed_dictionaries({
    "key": texts,
    "n": st.none() | st.integers(-2**63, 2**63 - 1),
    "x": st.none() | st.floats(allow_nan=False),
    "ok": st.none() | st.booleans(),
    "raw": st.none() | st.binary(max_size=30),
    "doc": st.none() | texts,
    "nothing": st.none(),
    "tags": st.none() | st.lists(st.none() | texts, max_size=5),
    "grid": st.none() | st.lists(st.none() | st.lists(st.none() | st.integers(-2**63, 2**63 - 1), max_size=3),
                                 max_size=3),
    "point": st.none() | st.fixed_dictionaries({"x": st.none() | st.floats(allow_nan=False),
                                                "y z": st.none() | st.lists(st.none() | texts, max_size=3)}),
    "attrs": st.none() | st.lists(st.tuples(texts, st.none() | st.integers(-5, 5)), max_size=3),
}), max_size=40)


@settings(max_examples=examples(150), deadline=None)
@given(rows_strategy, st.integers(0, 39), st.integers(1, 40))
def test_the_vectorised_checksum_is_the_spec_read_value_by_value(rows: list[dict[str, Any]], start: int,
                                                                  length: int) -> None:
    table = table_of(rows, SCHEMA)
    assert state_checksum(table) == reference_checksum(rows, SCHEMA)
    # A slice (buffers with an offset) hashes its own rows only.
    assert state_checksum(table.slice(start, length)) == reference_checksum(rows[start:start + length], SCHEMA)


@pytest.mark.slow  # 7,000 rows through the value-by-value reference
def test_long_values_cross_many_words_and_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    # Slices and the split between cores made small, so that 7,000 rows cross both as 70,000 would at their
    # real sizes (the reference hashes a value at a time: ten times the rows cost ten times the seconds).
    monkeypatch.setattr(checksum, "SLICE_ROWS", 1024)
    monkeypatch.setattr(cores, "LEAST_ROWS", 2048)
    rows = [{"key": f"k{i}", "doc": "é" * (i % 300), "tags": ["x" * j for j in range(i % 13)]}
            for i in range(7_000)]
    schema = {"key": "string", "doc": "json", "tags": "list<string>"}
    table = table_of(rows, schema)
    assert state_checksum(table) == reference_checksum(rows, schema)


def test_order_chunking_and_null_columns_do_not_matter() -> None:
    rows = [{"key": f"k{i}", "n": i} for i in range(100)]
    table = table_of(rows, {"key": "string", "n": "int64"})
    shuffled = table.take(pa.array(np.random.default_rng(1).permutation(100)))
    chunked = pa.concat_tables([table.slice(0, 30), table.slice(30)])
    grown = table.append_column(arrow_field("later", "string"), pa.nulls(100, pa.string()))
    assert state_checksum(table) == state_checksum(shuffled) == state_checksum(chunked) == state_checksum(grown)


def test_any_changed_value_changes_the_checksum() -> None:
    rows = [{"key": "a", "n": 1, "tags": ["x", "y"]}, {"key": "b", "n": 2, "tags": []}]
    schema = {"key": "string", "n": "int64", "tags": "list<string>"}
    base = state_checksum(table_of(rows, schema))
    variants = [
        [{**rows[0], "n": 2}, rows[1]],                       # a value
        [{**rows[0], "tags": ["y", "x"]}, rows[1]],           # an order inside a list
        [{**rows[0], "tags": ["x", "y", None]}, rows[1]],     # a null item
        [{**rows[0], "n": 2}, {**rows[1], "n": 1}],           # values swapped between rows
        [{**rows[0], "n": None}, rows[1]],                    # a value nulled
        [rows[0]],                                            # a row gone
    ]
    assert all(state_checksum(table_of(v, schema)) != base for v in variants)
    renamed = table_of(rows, schema).rename_columns(["key", "m", "tags"])
    assert state_checksum(renamed) != base


def test_advance_follows_removed_and_added_rows() -> None:
    schema = {"key": "string", "n": "int64"}
    before = table_of([{"key": k, "n": i} for i, k in enumerate("abcdef")], schema)
    after = table_of([{"key": "a", "n": 0}, {"key": "b", "n": 99}, {"key": "d", "n": 3}, {"key": "z", "n": 7},
                      {"key": "e", "n": 4}, {"key": "f", "n": 5}], schema)
    removed = row_digests(before.take([1, 2]))  # b replaced, c removed
    added = row_digests(after.filter(pa.array([False, True, False, True, False, False])))
    assert advance(state_checksum(before), removed, added) == state_checksum(after)


def test_empty_state_and_checksum_text() -> None:
    empty = table_of([], {"key": "string"})
    assert state_checksum(empty) == "h128:" + "0" * 32
    assert digest_sum(np.zeros(0, np.uint64)) == 0
    for bad in ["h128:" + "0" * 31, "h128:" + "G" * 32, "sha256:00", "H128:" + "0" * 32, 7]:
        with pytest.raises(FormatError):
            parse_checksum(bad)  # type: ignore[arg-type]


def test_digest_sum_keeps_carries_beyond_64_bits() -> None:
    digests = np.arange(5000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    expected = sum((fmix64(int(d) ^ LANE_HI) << 64) | fmix64(int(d) ^ LANE_LO) for d in digests) % (1 << 128)
    assert digest_sum(digests) == expected


def test_the_legacy_checksum_is_unchanged() -> None:
    """format_version 1 manifests stay verifiable: the sha256 of a known table, as version 1 wrote it."""
    table = table_of([{"key": "a", "n": 1, "doc": "[1]"}, {"key": "b", "n": None, "doc": None}],
                     {"key": "string", "n": "int64", "doc": "json"})
    assert legacy_state_checksum(table) == LEGACY_KNOWN


LEGACY_KNOWN = "sha256:a3cc20093467f1fce8e26cceaae03a84908a7198293d352ff4be8e2704dea945"
