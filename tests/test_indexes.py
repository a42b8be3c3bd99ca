"""Secondary indexes: equality and ranges checked against a brute-force scan of the replayed state."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from combe.consumer import Consumer
from combe.format.errors import ConfigError, KeyTypeError
from tests.support import corpus
from tests.support.changelog import canon
from tests.support.feed import Feed
from tests.support.written import Written, schema_of, shaped

GENRES = ["drama", "comedy", "horror", "noir"]


def film(rng: random.Random) -> dict[str, Any]:
    value: dict[str, Any] = {"genre": rng.choice(GENRES), "year": rng.randrange(1990, 2000),
                             "rating": rng.choice([0.0, -0.0, 1.5, 2.0, 7.25]), "cult": rng.random() < 0.3}
    if rng.random() < 0.2:
        value["genre"] = None  # nulls are indexed too (get(None)) but never in a range
    if rng.random() < 0.3:
        value["tags"] = rng.choice([["a"], ["a", "b"], []])
    return value


def decoded(state: dict[Any, str]) -> dict[Any, Any]:
    """The replayed records (JSON text) as values, parsed once for all the scans of a state."""
    return {k: json.loads(text) for k, text in state.items()}


def scan(records: dict[Any, Any], predicate: Any) -> list[str]:
    """Keys of the replayed records (from decoded()) matching ``predicate``, in key order."""
    return sorted(k for k, record in records.items() if predicate(record))


def keys_of(records: list[dict[str, Any]]) -> list[Any]:
    return [r["key"] for r in records]


def check_indexes(view: Any, state: dict[Any, str], page_limits: tuple[int, ...] = (7, 50)) -> None:
    rows = decoded(state)
    for genre in [*GENRES, None, "absent"]:
        assert keys_of(view.index("genre").get(genre)) == scan(rows, lambda r, g=genre: r.get("genre") == g)
    for year in range(1989, 2001):
        assert keys_of(view.index("year").get(year)) == scan(rows, lambda r, y=year: r["year"] == y)
        for genre in GENRES[:2]:
            got = keys_of(view.index(("genre", "year")).get((genre, year)))
            assert got == scan(rows, lambda r, g=genre, y=year: (r.get("genre"), r["year"]) == (g, y))
    assert keys_of(view.index("rating").get(0)) == scan(rows, lambda r: r["rating"] == 0)  # -0.0 too
    assert keys_of(view.index("cult").get(True)) == scan(rows, lambda r: r["cult"] is True)
    assert keys_of(view.index("tags").get(["a", "b"])) == scan(rows, lambda r: r.get("tags") == ["a", "b"])
    for lo, hi in [(1992, 1995), (None, 1993), (1997, None), (1995, 1995), (None, None)]:
        records = view.index("year").range(lo, hi)
        assert sorted(keys_of(records)) == scan(
            rows, lambda r, a=lo, b=hi: (a is None or r["year"] >= a) and (b is None or r["year"] < b))
        years = [r["year"] for r in records]
        assert years == sorted(years)
    by_genre = view.index("genre").range("comedy", "horror")
    assert sorted(keys_of(by_genre)) == scan(rows, lambda r: r.get("genre") in ("comedy", "drama"))
    assert [r["genre"] for r in by_genre] == sorted(r["genre"] for r in by_genre)
    both = view.index(("genre", "year")).range(("drama", 1995), ("horror", 1991))
    expected = scan(rows, lambda r: r.get("genre") is not None
                    and ("drama", 1995) <= (r["genre"], r["year"]) < ("horror", 1991))
    assert sorted(keys_of(both)) == expected
    assert keys_of(view.index("key").range("k010", "k020")) == [k for k in sorted(state) if "k010" <= k < "k020"]
    for record in view.index("genre").get("noir"):
        assert canon(record) == state[record["key"]]
    check_pages(view, page_limits)


def check_pages(view: Any, limits: tuple[int, ...]) -> None:
    """Every page of get() and range() is the same slice of the whole answer (overlay records included).
    A limit of 1 makes every record a page boundary: thorough, and most of the index test's time."""
    for index, call in [(view.index("genre"), lambda i, **page: i.get("drama", **page)),
                        (view.index("year"), lambda i, **page: i.get(1995, **page)),
                        (view.index("year"), lambda i, **page: i.range(1992, 1997, **page)),
                        (view.index(("genre", "year")), lambda i, **page: i.range(("comedy", 1990), None, **page)),
                        (view.index("key"), lambda i, **page: i.range("k100", None, **page))]:
        whole = call(index)
        for limit in limits:
            pages = [call(index, offset=offset, limit=limit) for offset in range(0, len(whole) + limit, limit)]
            assert all(len(page) <= limit for page in pages)
            assert [r for page in pages for r in page] == whole
        assert call(index, offset=len(whole) + 3, limit=5) == []


def test_indexes_equal_a_scan_through_deltas_rollbacks_and_snapshots(tmp_path: Path) -> None:
    rng = random.Random(11)
    feed = Feed(tmp_path, snapshot_every=4)
    feed.publish([(f"k{i:03d}", film(rng)) for i in range(400)])
    for _ in range(6):
        changes = [(f"k{rng.randrange(430):03d}", film(rng)) for _ in range(12)]
        feed.publish(changes + [(f"k{rng.randrange(430):03d}", None) for _ in range(4)])
    with feed.consumer(pin=1) as consumer:
        for version in [1, 2, 3, 5, 7, 6, 2, 4]:
            consumer.set_pin(version)
            # Pages of one record in version 4 (three deltas over the first snapshot, so the most overlay
            # records: every boundary between them and the snapshot's is a page's edge); 7 and 50 everywhere.
            check_indexes(consumer.view(), feed.states[version], (1, 7, 50) if version == 4 else (7, 50))


def test_the_snapshot_part_is_shared_across_delta_refreshes(tmp_path: Path) -> None:
    rng = random.Random(3)
    feed = Feed(tmp_path, snapshot_every=100, snapshot_ratio=100.0)
    feed.publish([(f"k{i:03d}", film(rng)) for i in range(200)])
    with feed.consumer() as consumer:
        live = consumer.index("genre")
        first = consumer.view()
        feed.publish([("k001", {**film(rng), "genre": "noir"}), ("k002", None), ("k900", film(rng))])
        assert consumer.refresh()
        second = consumer.view()
        assert second.base is first.base
        assert ("genre",) in second._indexes  # built before the swap, not by the first reader
        assert second.index("genre").base is first.index("genre").base  # the snapshot's part was reused
        noir = lambda r: r.get("genre") == "noir"  # noqa: E731
        assert keys_of(live.get("noir")) == scan(decoded(feed.states[2]), noir)
        assert keys_of(first.index("genre").get("noir")) == scan(decoded(feed.states[1]), noir)


def test_index_errors_say_what_is_wrong(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish([("a", {"year": 1, "tags": [1]}), ("b", {"year": 2})])
    with feed.consumer() as consumer:
        with pytest.raises(ConfigError, match="no such column"):
            consumer.index("nope")
        with pytest.raises(KeyTypeError, match=r"'1999' is a str, but column 'year' holds int64 values"):
            consumer.index("year").get("1999")
        with pytest.raises(KeyTypeError, match=r"1180591620717411303424 is outside the 64-bit integers that "
                                               r"column 'year' holds"):
            consumer.index("year").get(2**70)  # refused by name, as inside a nested value, not an OverflowError
        with pytest.raises(KeyTypeError, match="tuple of 2"):
            consumer.index(("year", "tags")).get(1)
        with pytest.raises(ConfigError, match=r"needs columns that can be ordered; .tags. \(list<int64>\) cannot be"):
            consumer.index("tags").range(None, None)
        assert keys_of(consumer.index("year").range(2, None)) == ["b"]


def test_json_text_written_before_the_canonical_form_is_found(tmp_path: Path) -> None:
    """The corpus's legacy dataset holds json text as combe wrote it before RFC 8785 (100.0, 1e-07, names by
    code point): a lookup, written canonically, finds those records too (docs/FORMAT.md, "Canonical JSON
    text")."""
    store = tmp_path / "store"
    shutil.copytree(corpus.DEFAULT_DIR / "store" / "legacy", store / "legacy")
    old_text = {row["key"]: row["tags"] for row in json.loads(
        (corpus.DEFAULT_DIR / "expected" / "legacy.json").read_bytes())["versions"][1]["rows"]}
    assert old_text["k1"] == '{"p":100.0,"q":[1e-07,1e+16]}' and old_text["k4"] == '{"r":2.5e-05}'
    with Consumer(str(store), "legacy", pin=2) as consumer:
        tags = consumer.index("tags")
        assert keys_of(tags.get({"q": [1e-7, 10**16], "p": 100})) == ["k1"]
        assert keys_of(tags.get({"\U0001F600": 2, "\uffff": 1})) == ["k2"]
        assert keys_of(tags.get({"r": 0.000025})) == ["k4"]
        assert tags.get({"r": 0.00002}) == []


NESTED = schema_of(tags="list<string>", point="struct<x:float64,y:float64>", attrs="map<string,int64>", n="int64")
GROWN = schema_of(tags="list<string>", point="struct<x:float64,y:float64,label:string>", attrs="map<string,int64>",
                  n="int64")


def nested_record(i: int) -> dict[str, Any]:
    return {"tags": [["a"], ["a", "b"], [], None, ["b", None]][i % 5],
            "point": [{"x": 1.0, "y": 2.0}, {"x": 0.5, "y": None}, None][i % 3],
            "attrs": [{"p": 1, "q": 2}, {"q": 2, "p": 1}, {}, None][i % 4] if i % 7 else {"p": 1, "q": 2},
            "n": i % 3}


def test_nested_columns_are_indexed_for_equality_through_deltas_and_growth(tmp_path: Path) -> None:
    written = Written(str(tmp_path))
    written.publish({f"k{i:03d}": nested_record(i) for i in range(300)}, NESTED)  # over 64 rows per value too
    with Consumer(str(tmp_path), written.dataset.name) as consumer:
        def check() -> None:
            view = consumer.view()
            state = {key: written.record(view.version, key) for key in written.states[view.version]}

            def scan(field: str, value: Any) -> list[str]:
                return sorted(k for k, record in state.items() if record is not None and record[field] == value)

            for tags in (["a"], ["a", "b"], [], None, ["b", None], ["b", "a"], ["zzz"]):
                assert keys_of(view.index("tags").get(tags)) == scan("tags", tags)
            for attrs in ({"p": 1, "q": 2}, {"q": 2, "p": 1}, {}, None, {"p": 1}):  # entry order does not matter
                assert keys_of(view.index("attrs").get(attrs)) == scan("attrs", attrs)
            # A lookup is made the column's type: ints in a float field, absent struct fields null.
            point = view.schema.columns["point"]
            ones = scan("point", shaped({"x": 1.0, "y": 2.0}, point))
            assert keys_of(view.index("point").get({"x": 1, "y": 2})) == ones
            assert keys_of(view.index("point").get({"x": 0.5})) == scan("point", shaped({"x": 0.5}, point))
            assert keys_of(view.index(("tags", "n")).get((["a"], 0))) == sorted(
                k for k, r in state.items() if r["tags"] == ["a"] and r["n"] == 0)
            for record in view.index("attrs").get({"p": 1, "q": 2}):
                assert record == state[record["key"]]

        check()
        written.publish({"k000": {"tags": ["new"], "point": {"x": -0.0, "y": 0.0}},
                         "k001": None, "k999": nested_record(1)}, NESTED)
        consumer.refresh()
        check()
        view = consumer.view()
        assert keys_of(view.index("tags").get(["new"])) == ["k000"]
        # Floats inside nested values compare by their bits, as the state checksum hashes them.
        assert keys_of(view.index("point").get({"x": -0.0, "y": 0.0})) == ["k000"]
        assert keys_of(view.index("point").get({"x": 0.0, "y": 0.0})) == []
        shared = view.index("point").base
        written.publish({"k002": {"point": {"x": 1.0, "y": 2.0, "label": "grown"}}}, GROWN)  # a field appended
        consumer.refresh()
        check()
        view = consumer.view()
        assert view.index("point").base is shared  # the snapshot's part serves the grown type too
        assert keys_of(view.index("point").get({"x": 1.0, "y": 2.0, "label": "grown"})) == ["k002"]
        assert "k002" not in keys_of(view.index("point").get({"x": 1.0, "y": 2.0}))
        assert len(view.index("point").get({"x": 1.0, "y": 2.0, "label": None})) > 64


def test_nested_index_errors_say_what_is_wrong(tmp_path: Path) -> None:
    written = Written(str(tmp_path))
    written.publish({"a": nested_record(0)}, NESTED)
    with Consumer(str(tmp_path), written.dataset.name) as consumer:
        with pytest.raises(ConfigError, match=r"range\(\) needs columns that can be ordered; 'tags' "
                                              r"\(list<string>\) cannot be"):
            consumer.index("tags").range(["a"], None)
        with pytest.raises(KeyTypeError, match=r"1 is a int, but column 'tags'\[1\] holds string values"):
            consumer.index("tags").get(["a", 1])
        with pytest.raises(KeyTypeError, match=r"column 'point' has no field 'z' \(its fields: x, y\)"):
            consumer.index("point").get({"z": 1.0})
        with pytest.raises(KeyTypeError, match=r"'x' is a str, but column 'point'.x holds float64 values"):
            consumer.index("point").get({"x": "x"})
        with pytest.raises(KeyTypeError, match=r"'a' is a str, but column 'attrs' holds map<string,int64>"):
            consumer.index("attrs").get("a")
