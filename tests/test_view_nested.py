"""Nested columns through a View: lookups, batches, tables, deltas, schema growth inside values, reverse walks.

The datasets are written with the format layer alone (tests/support/written.py),
so any schema can be published; the records as written are the truth.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from combe.consumer import Consumer, View
from combe.format.errors import FormatError
from tests.support.properties import examples
from tests.support.values import values
from tests.support.written import Written, schema_of

SCHEMA = schema_of(
    title="string", tags="list<string>", scores="list<float64>", who="struct<id:int64,name:string,ok:bool>",
    attrs="map<string,int64>", cast="list<struct<name:string,roles:list<string>>>", doc="json",
)
RECORD = st.fixed_dictionaries({name: values(type_) for name, type_ in SCHEMA.columns.items()
                                if type_ != "json"})
KEYS = [f"k{i:02d}" for i in range(40)]


def check_reads(view: View, written: Written) -> None:
    """get, get_many (both paths), get_table, table and pyarrow's own reading all give the written records."""
    keys = sorted({key for state in written.states.values() for key in state} | {*KEYS, "absent"})
    truth = [written.record(view.version, key) for key in keys]
    assert [view.get(key) for key in keys] == truth
    assert view.get_many(keys) == truth  # batch path (32 keys and more)
    assert view.get_many(keys[:3]) == truth[:3]  # one by one
    present = [record for record in truth if record is not None]
    assert view.table.to_pylist(maps_as_pydicts="strict") == present
    wanted = [record["key"] for record in reversed(present)]
    assert view.get_table(wanted).to_pylist(maps_as_pydicts="strict") == present[::-1]


@settings(max_examples=examples(12), deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), st.none() | RECORD, min_size=1, max_size=12),
                min_size=4, max_size=4))
def test_nested_values_read_back_as_written_through_snapshots_and_deltas(versions: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as store:
        written = Written(store)
        written.publish({key: record or {} for key, record in versions[0].items()}, SCHEMA)
        with Consumer(store, written.dataset.name) as following:
            for number, changes in enumerate(versions[1:], start=2):
                written.publish(changes, SCHEMA, snapshot=number == 3)
                following.refresh()
                check_reads(following.view(), written)  # the snapshot it started from, plus deltas
            for version in range(1, 5):
                with Consumer(store, written.dataset.name, pin=version) as fresh:
                    check_reads(fresh.view(), written)
                following.set_pin(version)  # back by reverse deltas, or a snapshot
                check_reads(following.view(), written)


V1 = schema_of(who="struct<id:int64,name:string>", tags="list<null>", pairs="list<struct<a:int64>>",
               attrs="map<string,struct<x:int64>>", later="null")
V2 = schema_of(who="struct<id:int64,name:string,age:float64>", tags="list<string>",
               pairs="list<struct<a:int64,b:list<string>>>", attrs="map<string,struct<x:int64,y:bool>>",
               later="struct<z:string>", added="list<int64>")


def grow(store: str) -> Written:
    """v1 in the old types; v2 (a delta) grows them; v3 a snapshot in the new types; v4 a delta."""
    written = Written(store)
    # Filler rows make a snapshot cost more to fetch than the deltas, so going back walks reverse deltas.
    filler = {f"f{i:03d}": {"who": {"id": i, "name": uuid.UUID(int=i * 7919).hex}} for i in range(300)}
    written.publish({
        **filler,
        "a": {"who": {"id": 1, "name": "Ann"}, "tags": [None], "pairs": [{"a": 1}], "attrs": {"p": {"x": 1}}},
        "b": {"who": {"id": 2, "name": None}, "tags": [], "pairs": [None, {"a": None}], "attrs": {}},
        "c": {"who": None, "tags": None, "pairs": None, "attrs": None},
    }, V1)
    written.publish({
        "b": {"who": {"id": 2, "name": "Bob", "age": 4.5}, "tags": ["x", None], "pairs": [{"a": 2, "b": ["y"]}],
              "attrs": {"q": {"x": 2, "y": True}}, "later": {"z": "z"}, "added": [1, None]},
        "d": {"who": {"id": 4, "name": "Dee", "age": None}, "tags": ["d"], "pairs": [], "attrs": None},
    }, V2)
    written.publish({"c": None}, V2, snapshot=True)
    written.publish({"a": {"who": {"id": 1, "name": "Ann", "age": 30.0}, "tags": ["a"]}}, V2)
    return written


# What the untouched row "a" reads as in the newer schema: new fields and columns null.
A_GROWN = {"key": "a", "who": {"id": 1, "name": "Ann", "age": None}, "tags": [None], "pairs": [{"a": 1, "b": None}],
           "attrs": {"p": {"x": 1, "y": None}}, "later": None, "added": None}


def test_a_struct_gains_fields_and_a_list_of_nulls_gets_a_type_without_a_snapshot(tmp_path: Path) -> None:
    written = grow(str(tmp_path))
    with Consumer(str(tmp_path), "nested", pin=2) as consumer:
        view = consumer.view()
        assert (view.version, view.base_version) == (2, 1)  # the v1 snapshot, in the old types, plus a delta
        assert view.get("a") == A_GROWN
        assert view.get_many(["a"] * 40)[0] == A_GROWN
        assert view.get_table(["a"]).to_pylist(maps_as_pydicts="strict") == [A_GROWN]
        assert view.table.schema == V2.to_arrow()
        check_reads(view, written)
        consumer.set_pin(4)  # the v3 snapshot in the new types, plus a delta
        check_reads(consumer.view(), written)


def test_reverse_walks_read_older_types_from_a_newer_snapshot(tmp_path: Path) -> None:
    written = grow(str(tmp_path))
    with Consumer(str(tmp_path), "nested", pin=3) as consumer:
        assert consumer.view().base_version == 3
        consumer.set_pin(2)
        assert (consumer.view().version, consumer.view().base_version) == (2, 3)  # a reverse delta, same base
        check_reads(consumer.view(), written)
        consumer.set_pin(1)  # back across the growth: the fields v1 did not have are not in its records
        view = consumer.view()
        assert view.base_version == 3 and view.deltas_applied == 2
        assert view.get("a") == {"key": "a", "who": {"id": 1, "name": "Ann"}, "tags": [None], "pairs": [{"a": 1}],
                                 "attrs": {"p": {"x": 1}}, "later": None}
        assert view.table.schema == V1.to_arrow()
        check_reads(view, written)


def test_a_delta_across_a_type_change_the_format_does_not_allow_is_refused(tmp_path: Path) -> None:
    written = Written(str(tmp_path))
    written.publish({"a": {"who": {"id": 1, "name": "Ann"}}}, schema_of(who="struct<id:int64,name:string>"))
    with Consumer(str(tmp_path), "nested") as consumer:
        # Fields reordered: not an append. A writer must publish this as a snapshot-only version.
        written.publish({"b": {"who": {"name": "Bob", "id": 2}}}, schema_of(who="struct<name:string,id:int64>"))
        with pytest.raises(FormatError, match=r"column 'who' is struct<id:int64,name:string> at version 1 and "
                                              r"struct<name:string,id:int64> at version 2"):
            consumer.refresh()
        assert consumer.version == 1 and consumer.get("a") == {"key": "a", "who": {"id": 1, "name": "Ann"}}


def test_json_columns_of_format_version_1_datasets_still_read_as_values(tmp_path: Path) -> None:
    written = Written(str(tmp_path))
    schema = schema_of(doc="json", tags="list<string>")
    written.publish({"a": {"doc": '{"b":[1,2.5,null]}', "tags": ["t"]}}, schema)
    with Consumer(str(tmp_path), "nested") as consumer:
        assert consumer.get("a") == {"key": "a", "doc": {"b": [1, 2.5, None]}, "tags": ["t"]}
        assert consumer.view().table.column("doc").type == pa.string()  # json stays text in Arrow


def test_the_table_is_plain_arrow_that_other_readers_take_as_typed_columns(tmp_path: Path) -> None:
    written = grow(str(tmp_path))
    with Consumer(str(tmp_path), "nested", pin=2) as consumer:  # a snapshot plus a delta: the table is built
        view = consumer.view()
        table = view.table
        records = [view.get(key) for key in table.column("key").to_pylist()]
        # pyarrow's own reading of the table is get's, record for record.
        assert table.to_pylist(maps_as_pydicts="strict") == records
        pairs = pa.list_(pa.struct([("a", pa.int64()), ("b", pa.list_(pa.string()))]))
        assert table.schema.field("pairs").type == pairs
        # Arrow kernels work on the nested columns as they are, with no JSON to parse.
        lengths = pc.list_value_length(table.column("tags")).to_pylist()
        assert lengths == [None if r["tags"] is None else len(r["tags"]) for r in records]
        names = pc.struct_field(table.column("who"), "name").to_pylist()
        assert names == [None if r["who"] is None else r["who"]["name"] for r in records]
        # Through Parquet and back, as another tool would store and read it.
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        again = pq.read_table(pa.BufferReader(sink.getvalue()))
        assert again.to_pylist(maps_as_pydicts="strict") == records
        assert [written.record(2, r["key"]) for r in records] == records


def test_nested_values_read_from_a_memory_mapped_cache(tmp_path: Path) -> None:
    written = grow(str(tmp_path / "store"))
    for _ in range(2):  # the first consumer fills the cache, the second maps what it left
        with Consumer(str(tmp_path / "store"), "nested", pin=4, cache_dir=tmp_path / "cache") as consumer:
            check_reads(consumer.view(), written)
    assert any((tmp_path / "cache").rglob("*"))


@pytest.mark.parametrize("method", ["deltas", "states"])
def test_diff_and_history_give_nested_values_as_get_does(tmp_path: Path, method: str) -> None:
    written = grow(str(tmp_path))
    with Consumer(str(tmp_path), "nested") as consumer:
        diff = consumer.diff(1, 4, method=method)
        changes = {change.key: change for change in diff}
        assert set(changes) == {"a", "b", "c", "d"}  # across the growth: a record only grown is no change
        for key, change in changes.items():
            assert change.before == written.record(1, key)  # each side in its own version's schema
            assert change.after == written.record(4, key)
        assert changes["b"].after["attrs"] == {"q": {"x": 2, "y": True}}  # a map is a dict, not pairs
        history = consumer.history("b")
        assert [(c.version, c.op) for c in history.changes] == [(1, "added"), (2, "updated")]
        assert history.changes[1].record == written.record(2, "b")
        # "a" is only grown at v2 (its struct gained a field): no change there, in diffs or its history.
        assert {change.key for change in consumer.diff(1, 2, method=method)} == {"b", "d"}
        history = consumer.history("a")
        assert [(c.version, c.op, c.record) for c in history.changes] == [
            (1, "added", written.record(1, "a")), (4, "updated", written.record(4, "a"))]
