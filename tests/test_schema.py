"""Schema evolution rules: which type changes a delta may carry, and reading a column in a grown or older type."""

from __future__ import annotations

import pyarrow as pa
import pytest

from combe.format.errors import FormatError
from combe.format.schema import Schema, conform, conform_array, conform_value, grows
from combe.format.types import arrow_type


@pytest.mark.parametrize("old, new", [
    ("string", "string"), ("null", "int64"), ("null", "list<struct<a:int64>>"), ("list<null>", "list<string>"),
    ("struct<a:int64>", "struct<a:int64,b:string>"), ("struct<>", "struct<a:bool>"),
    ("struct<a:null>", "struct<a:map<string,int64>>"), ("list<struct<a:int64>>", "list<struct<a:int64,b:bool>>"),
    ("map<string,struct<x:int64>>", "map<string,struct<x:int64,y:list<string>>>"),
    ("map<int64,null>", "map<int64,float64>"),
])
def test_what_a_delta_may_carry(old: str, new: str) -> None:
    assert grows(old, new)


@pytest.mark.parametrize("old, new", [
    ("int64", "float64"),  # only while a column is being inferred, never once published
    ("int64", "null"), ("string", "json"), ("list<string>", "string"), ("list<int64>", "list<float64>"),
    ("struct<a:int64,b:string>", "struct<a:int64>"),  # removed
    ("struct<a:int64,b:string>", "struct<b:string,a:int64>"),  # reordered
    ("struct<a:int64>", "struct<c:string,a:int64>"),  # inserted before
    ("struct<a:int64>", "struct<A:int64>"),  # renamed
    ("map<string,int64>", "map<int64,int64>"), ("list<int64>", "map<int64,int64>"),
])
def test_what_needs_a_snapshot(old: str, new: str) -> None:
    assert not grows(old, new)


def test_a_grown_struct_reads_old_rows_with_nulls_and_keeps_its_own_nulls() -> None:
    old = pa.array([{"a": 1}, None, {"a": None}], arrow_type("struct<a:int64>"))
    grown = conform_array(old, "struct<a:int64,b:list<string>>", "column 'x'")
    assert grown.type == arrow_type("struct<a:int64,b:list<string>>")
    assert grown.to_pylist() == [{"a": 1, "b": None}, None, {"a": None, "b": None}]


def test_growth_deep_inside_lists_and_maps() -> None:
    type_ = "list<map<string,struct<x:null>>>"
    old = pa.array([[{"k": {"x": None}}, None], None, []], arrow_type(type_))
    new = "list<map<string,struct<x:list<string>,y:bool>>>"
    grown = conform_array(old, new, "column 'x'")
    assert grown.type == arrow_type(new)
    assert grown.to_pylist(maps_as_pydicts="strict") == [[{"k": {"x": None, "y": None}}, None], None, []]
    # and back: the fields the older type lacks hold nothing, so they go
    assert conform_array(grown, type_, "column 'x'").to_pylist(maps_as_pydicts="strict") == \
        old.to_pylist(maps_as_pydicts="strict")


def test_going_back_to_a_type_without_a_field_that_holds_a_value_is_refused() -> None:
    # Arrow's own cast would drop "b" here without a word.
    new = pa.array([{"a": 1, "b": None}, {"a": 2, "b": "kept"}], arrow_type("struct<a:int64,b:string>"))
    with pytest.raises(FormatError, match=r"column 'x'.b holds values, but the schema's struct<a:int64> has no "
                                          r"field 'b'"):
        conform_array(new, "struct<a:int64>", "column 'x'")
    # A value under a null struct is no value.
    masked = pa.StructArray.from_arrays([pa.array([1]), pa.array(["hidden"])], names=["a", "b"],
                                        mask=pa.array([True]))
    assert conform_array(masked, "struct<a:int64>", "column 'x'").to_pylist() == [None]
    with pytest.raises(FormatError, match=r"column 'x'\[\] holds values, but the schema has it all null"):
        conform_array(pa.array([["v"]]), "list<null>", "column 'x'")


def test_a_struct_conformed_to_no_fields_keeps_its_length() -> None:
    # A struct read back as struct<> (its fields all null) has no child to carry its length: found by
    # test_fold's dict replay, where a pinned reverse walk conformed a one-row slice to zero rows.
    whole = pa.array([{"x": 1}, {"x": None}, {"x": 2}], arrow_type("struct<x:int64>"))
    assert conform_array(whole.slice(1, 1), "struct<>", "column 'q'").to_pylist() == [{}]
    table = pa.table({"key": ["a"], "q": whole.slice(1, 1)})
    assert conform(table, Schema("key", "string", {"q": "struct<>"})).to_pylist() == [{"key": "a", "q": {}}]


def test_conform_adds_missing_columns_and_conforms_the_rest() -> None:
    schema = Schema("key", "string", {"who": "struct<id:int64,age:float64>", "tags": "list<string>"})
    table = pa.table({"key": ["a"], "who": pa.array([{"id": 1}], arrow_type("struct<id:int64>"))})
    conformed = conform(table, schema)
    assert conformed.schema == schema.to_arrow()
    assert conformed.to_pylist() == [{"key": "a", "who": {"id": 1, "age": None}, "tags": None}]


def test_values_already_read_follow_the_same_rules() -> None:
    type_ = "struct<a:float64,b:list<struct<c:int64,d:string>>,m:map<int64,struct<e:bool>>>"
    value = {"a": 1, "b": [{"c": 1}, None], "m": {7: {}}, "gone": None}
    assert conform_value(value, type_) == {"a": 1.0, "b": [{"c": 1, "d": None}, None], "m": {7: {"e": None}}}
    assert conform_value([1, 2], "null") is None
