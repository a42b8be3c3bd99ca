"""The Arrow types of nested combe types are exactly what docs/FORMAT.md ("Column types") says, child by child."""

from __future__ import annotations

import pyarrow as pa

from combe.format.codec import ipc_file_bytes, read_ipc
from combe.format.types import arrow_field, arrow_type, type_of_field


def test_children_names_and_nullability_are_as_documented() -> None:
    item = arrow_type("list<string>").value_field
    assert (item.name, item.type, item.nullable) == ("item", pa.string(), True)

    struct = arrow_type('struct<id:int64,"first name":list<bool>>')
    assert [(f.name, f.type, f.nullable, f.metadata) for f in struct] == [
        ("id", pa.int64(), True, None), ("first name", arrow_type("list<bool>"), True, None)]

    mapped = arrow_type("map<int64,struct<x:float64>>")
    assert not mapped.keys_sorted
    entries = mapped.field(0)  # a map's one child
    assert (entries.name, entries.nullable) == ("entries", False)
    assert [(f.name, f.type, f.nullable) for f in entries.type] == [
        ("key", pa.int64(), False), ("value", arrow_type("struct<x:float64>"), True)]


def test_types_read_back_from_an_ipc_file_as_written() -> None:
    types = ["list<list<int64>>", "struct<a:map<string,list<null>>>", "map<string,binary>", "struct<>", "json"]
    schema = pa.schema([arrow_field(f"c{i}", t) for i, t in enumerate(types)])
    table = read_ipc(ipc_file_bytes(schema.empty_table()), path="test")
    assert table.schema.equals(schema, check_metadata=True)
    assert [type_of_field(f) for f in table.schema] == types


def test_a_list_child_named_otherwise_is_the_same_type() -> None:
    # Parquet writers name list items "element"; Arrow compares types without child names, and so does combe.
    other = pa.field("tags", pa.list_(pa.field("element", pa.string())))
    assert type_of_field(other) == "list<string>" and other.type == arrow_type("list<string>")
