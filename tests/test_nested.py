"""Generated readers of nested columns against pyarrow's own conversion, at any offset and depth."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from combe.consumer.nested import nested_source
from combe.consumer.rows import ColumnReader, compile_function, python_values
from combe.format.codec import ipc_file_bytes, read_ipc
from combe.format.errors import FormatError
from combe.format.types import arrow_type
from tests.support.properties import examples
from tests.support.values import NESTED_TYPES, values


def as_pyarrow_reads(array: pa.Array) -> list[Any]:
    return array.to_pylist(maps_as_pydicts="strict")  # type: ignore[no-any-return]


def one_by_one(array: pa.Array, stored: str, wanted: str | None = None) -> list[Any]:
    """Every value through the per-row expression a View's ``get`` compiles."""
    env: dict[str, Any] = {}
    expr = nested_source(array, stored, wanted or stored, "r", env, "t")
    read = compile_function(f"def read(r):\n    return {expr}\n", "read", env)
    return [read(r) for r in range(len(array))]


@st.composite
def typed_arrays(draw: st.DrawFn) -> tuple[str, list[Any]]:
    type_ = draw(st.sampled_from(NESTED_TYPES))
    return type_, draw(st.lists(values(type_), min_size=1, max_size=12))


@settings(max_examples=examples(150), deadline=None)
@given(typed_arrays(), st.data())
def test_values_read_from_buffers_equal_pyarrows_at_any_offset(typed: tuple[str, list[Any]],
                                                               data: st.DataObject) -> None:
    type_, rows = typed
    array = pa.array(rows, arrow_type(type_))
    assert as_pyarrow_reads(array) == rows
    start = data.draw(st.integers(0, len(rows) - 1))
    for part in (array, array.slice(start), array.slice(start, data.draw(st.integers(0, len(rows) - start)))):
        expected = as_pyarrow_reads(part)
        assert python_values(part, type_) == expected
        assert one_by_one(part, type_) == expected
    # Through an IPC file, as a snapshot is read (buffers from the file, not from Python).
    table = read_ipc(ipc_file_bytes(pa.table({"c": array})), path="test")
    assert one_by_one(table.column("c").chunk(0), type_) == rows


def test_children_with_offsets_of_their_own() -> None:
    # A list whose items are a slice of a longer array, inside a struct that is itself sliced.
    items = pa.array(["skip", "me", "a", None, "b", "c"]).slice(2)
    tags = pa.ListArray.from_arrays(pa.array([0, 2, 2, 4], pa.int32()), items, mask=pa.array([False, True, False]))
    numbers = pa.array([9, 9, 1, 2, 3]).slice(2)
    struct = pa.StructArray.from_arrays([tags, numbers], names=["tags", "n"]).slice(1)
    type_ = "struct<tags:list<string>,n:int64>"
    assert as_pyarrow_reads(struct) == [{"tags": None, "n": 2}, {"tags": ["b", "c"], "n": 3}]
    assert python_values(struct, type_) == one_by_one(struct, type_) == as_pyarrow_reads(struct)


def test_any_depth_compiles_and_reads() -> None:
    type_, value = "int64", 7
    for _ in range(32):
        type_, value = f"list<{type_}>", [value, None]
    type_ = f"struct<deep:{type_}>"
    array = pa.array([{"deep": value}, None], arrow_type(type_))
    assert one_by_one(array, type_) == python_values(array, type_) == [{"deep": value}, None]


def test_a_map_reads_as_a_dict_and_its_last_entry_wins() -> None:
    # combe never writes a key twice in one map (docs/FORMAT.md); a reader that meets one keeps the last.
    array = pa.array([[("a", 1), ("b", None), ("a", 3)], [], None], pa.map_(pa.string(), pa.int64()))
    assert one_by_one(array, "map<string,int64>") == [{"a": 3, "b": None}, {}, None]


def test_an_older_stored_type_reads_as_the_newer_one() -> None:
    stored = "struct<id:int64,tags:list<null>,gone:string>"
    array = pa.array([{"id": 1, "tags": [None], "gone": None}, {"id": None, "tags": None, "gone": None}, None],
                     arrow_type(stored))
    wanted = "struct<id:int64,tags:list<string>,added:struct<x:bool>>"
    expected = [{"id": 1, "tags": [None], "added": None}, {"id": None, "tags": None, "added": None}, None]
    assert one_by_one(array, stored, wanted) == expected
    reader = ColumnReader(array, stored, wanted)
    assert reader.values(np.arange(3), pa.array(np.arange(3))) == expected
    assert one_by_one(array, stored, "null") == [None] * 3


def test_a_type_that_cannot_be_read_as_another_is_a_format_error() -> None:
    array = pa.array([[1]], pa.list_(pa.int64()))
    with pytest.raises(FormatError, match="stored as int64 cannot be read as string"):
        one_by_one(array, "list<int64>", "list<string>")
