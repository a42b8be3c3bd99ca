"""Views: lookups one by one and in batches, column projection, and no torn read under refresh."""

from __future__ import annotations

import gc
import json
import random
import subprocess
import sys
import threading
import time
import weakref
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from combe.format.errors import ConfigError, KeyTypeError
from tests.support.feed import Feed, lookup_state, view_state


def movie(i: int, year: int = 1990) -> dict[str, Any]:
    return {"title": f"Movie {i}", "year": year + i % 7, "rating": i / 4, "seen": i % 2 == 0,
            "tags": ["a", str(i)] if i % 3 else None}


def test_get_and_get_many_equal_the_replay_through_deltas_and_removals(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish([(f"m{i:04d}", movie(i)) for i in range(300)])
    rng = random.Random(7)
    with feed.consumer() as consumer:
        for _ in range(4):
            changes = [(f"m{rng.randrange(400):04d}", movie(rng.randrange(1000), 2000)) for _ in range(30)]
            changes += [(f"m{rng.randrange(300):04d}", None) for _ in range(10)]
            version = feed.publish(changes)
            assert consumer.refresh()
            with consumer.view() as view:
                assert view.version == version and view.deltas_applied >= 1
                keys = [f"m{i:04d}" for i in range(400)] + ["absent", "m0001", "m0001"]
                assert lookup_state(view, keys) == feed.states[version]
                assert view_state(view) == feed.states[version]
                assert len(view) == len(feed.states[version])


def test_int64_keys_one_by_one_and_in_batches(tmp_path: Path) -> None:
    feed = Feed(tmp_path, key_type="int64")
    feed.publish([(i * 3, movie(i)) for i in range(200)] + [(602, {"title": "sparse"})])
    feed.publish([(1, movie(1)), (3, None), (600, movie(600)), (601, {"title": "nulls elsewhere"})])
    with feed.consumer() as consumer, consumer.view() as view:
        keys = list(range(-5, 650))
        assert lookup_state(view, keys) == feed.states[2]
        assert view.get(6) == view.get("6") == view.get(np.int64(6)) == {"key": 6, **movie(2)}
        assert view.get_many([602] * 40)[0] == {**view.get_many([601] * 40)[0], "key": 602, "title": "sparse"}
        assert view.get_many([601] * 40)[0] == {"key": 601, "title": "nulls elsewhere", "year": None, "rating": None,
                                                "seen": None, "tags": None}
        assert view.get_many([str(k) for k in range(40)]) == view.get_many(list(range(40)))
        for wrong in (True, 1.5, "x", None, 2**63, -2**63 - 1):
            with pytest.raises(KeyTypeError):
                view.get(wrong)
            with pytest.raises(KeyTypeError):
                view.get_many([wrong] * 40)


def test_string_keys_refuse_other_types_and_accept_any_text(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish([("ключ", {"x": 1}), (" ", {"x": 2}), ("a\u0000b", {"x": 3})])
    with feed.consumer() as consumer:
        assert consumer.get("ключ") == {"key": "ключ", "x": 1}
        assert consumer.get(" ") == {"key": " ", "x": 2}
        assert consumer.get("") is None
        assert consumer.get("a\u0000b") == {"key": "a\u0000b", "x": 3}
        assert consumer.get("\udcff") is None  # cannot be stored, so cannot be found
        with pytest.raises(KeyTypeError):
            consumer.get(1)
        with pytest.raises(KeyTypeError):
            consumer.get_many(["ключ".encode()] * 40)


def test_records_are_new_dicts_each_time(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish([("a", {"x": 1}), ("b", {"x": 2})])
    feed.publish([("b", {"x": 3})])
    with feed.consumer(pin=1) as consumer:
        consumer.set_pin(2)
        for key in ("a", "b"):
            consumer.get(key)["x"] = 99  # type: ignore[index]
            consumer.get_many([key] * 40)[0]["x"] = 99  # type: ignore[index]
        assert consumer.get_many(["a", "b"]) == [{"key": "a", "x": 1}, {"key": "b", "x": 3}]


def test_column_projection_returns_only_those_columns(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish([(f"m{i:03d}", movie(i)) for i in range(100)])
    feed.publish([("m001", movie(5, 1800)), ("new", movie(7)), ("m002", None)])
    with feed.consumer(columns=["year", "seen"], pin=1) as consumer:
        for version in (1, 2):
            consumer.set_pin(version)
            with consumer.view() as view:
                assert view.table.column_names == ["key", "year", "seen"]
                expected = {k: {f: v for f, v in json.loads(c).items() if f in ("year", "seen")}
                            for k, c in feed.states[version].items()}
                keys = sorted(expected) + ["m002"]
                got = {k: r for k, r in zip(keys, view.get_many(keys)) if r is not None}
                assert {k: {f: v for f, v in r.items() if f != "key"} for k, r in got.items()} == expected
                assert all(set(r) == {"key", "year", "seen"} for r in got.values())
                assert view.get("new") == (None if version == 1 else {"key": "new", "year": 1990, "seen": False})
        full_bytes = feed.consumer().view().base.nbytes
        assert consumer.view().base.nbytes < full_bytes / 2
    with pytest.raises(ConfigError, match="'yeer'"):
        feed.consumer(columns=["yeer"])


MEMORY_SCRIPT = """
import gc, json, os, sys
import pyarrow as pa
from combe.consumer import Consumer

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def growth(columns):
    # a forked child per load: it starts from this process's pages, so its growth is the load's alone
    read, write = os.pipe()
    if os.fork() == 0:
        before = rss()
        consumer = Consumer(store, "wide", columns=columns, cache_dir=cache)
        records = consumer.get_many([f"k{i:06d}" for i in range(0, 20000)])
        del records
        gc.collect()
        os.write(write, str(rss() - before).encode())
        os._exit(0)
    os.close(write)
    pid, status = os.wait()
    assert status == 0, status
    with os.fdopen(read) as pipe:
        return int(pipe.read())

store, runs, cache = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] or None
pa.array([0]).to_numpy()  # pyarrow imports pandas, when installed, on first use: 40 MB that are not the dataset's
print(json.dumps([growth(columns) for columns in runs]))
"""


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Feed:
    """20,000 records with a wide text column, published once for both cases below (a second of CPU each)."""
    feed = Feed(tmp_path_factory.mktemp("wide"), name="wide")
    feed.publish([(f"k{i:06d}", {"n": i, "text": f"{i:06d}" + "x" * 400}) for i in range(20000)])
    return feed


@pytest.mark.parametrize("cached", [False, True])
def test_column_projection_uses_less_memory(wide: Feed, tmp_path: Path, cached: bool) -> None:
    """Resident memory of a consumer loaded in a fresh process (forked from one that imported combe, so that
    the imports are paid once): the unselected wide column is never resident."""
    feed = wide
    cache = str(tmp_path / "cache") if cached else ""
    if cached:
        feed.consumer(cache_dir=cache)  # fills the cache; the measured processes map it
    # Each load twice, the smaller growth kept: now and then one grows by megabytes more than its load needs
    # (seen: 65 MB projected against 70 MB whole), which hides the 8 MB column from a single measurement.
    runs = [None, ["n"], None, ["n"]]
    grown = json.loads(subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, feed.store, json.dumps(runs), cache],
                                      check=True, capture_output=True, text=True).stdout)
    full, projected = min(grown[0::2]), min(grown[1::2])
    text_bytes = 20000 * 406
    assert full > text_bytes * 0.9, (full, projected, grown)
    assert projected < full - text_bytes * 0.7, (full, projected, grown)


class Invariant:
    """What every version v of the torn-read test holds, checkable inside one View.

    Version v sets all 40 ``g`` keys and ``meta`` to v, adds ``n<v>`` tagged
    live and removes ``n<v-3>``: a View mixing two versions breaks one of the
    checks. Version 1 also adds 400 records that never change, so that most
    versions are deltas over an older snapshot.
    """

    GROUP = [f"g{i:02d}" for i in range(40)]

    @staticmethod
    def changes(v: int) -> list[tuple[str, Any]]:
        changes: list[tuple[str, Any]] = [(key, {"v": v, "tag": "group"}) for key in Invariant.GROUP]
        changes += [("meta", {"v": v, "tag": "meta"}), (f"n{v}", {"v": v, "tag": "live"})]
        if v > 3:
            changes.append((f"n{v - 3}", None))
        if v == 1:
            changes += [(f"f{i:03d}", {"v": -100, "tag": "filler"}) for i in range(400)]
        return changes

    @staticmethod
    def check(view: Any, full: bool) -> None:
        v = view.version
        assert view.get("meta") == {"key": "meta", "v": v, "tag": "meta"}
        assert [r["v"] for r in view.get_many(Invariant.GROUP)] == [v] * 40
        assert all(view.get(key)["v"] == v for key in Invariant.GROUP[::7])
        live = {f"n{u}" for u in range(max(1, v - 2), v + 1)}
        assert {r["key"] for r in view.index("tag").get("live")} == live
        assert view.get(f"n{v - 3}") is None
        assert {r["key"] for r in view.index("v").get(v)} == {*Invariant.GROUP, "meta", f"n{v}"}
        assert [r["v"] for r in view.index("v").range(v - 2, None)] == [*range(max(1, v - 2), v), *[v] * 42]
        if full:
            table = view.table
            assert set(table.column("v").to_pylist()) == {-100, *range(max(1, v - 2), v + 1)}


def test_readers_never_see_a_torn_version(tmp_path: Path) -> None:
    feed = Feed(tmp_path, snapshot_every=4)
    feed.publish(Invariant.changes(1))
    stop = threading.Event()
    failures: list[BaseException] = []
    # Four reader threads: under the GIL more only take turns, and every one of them spins until the end.
    readers = 4
    seen: list[set[int]] = [set() for _ in range(readers)]
    reads = [0] * readers
    with feed.consumer(refresh_interval=0.002, max_deltas=3) as consumer:
        consumer.index("tag")
        consumer.index("v")

        def reader(slot: int) -> None:
            while not stop.is_set():
                try:
                    with consumer.view() as view:
                        Invariant.check(view, full=reads[slot] % 25 == 0)
                        seen[slot].add(view.version)
                    reads[slot] += 1
                    time.sleep(0.001)  # let the producer and the refresher have the GIL too
                except BaseException as exc:  # noqa: BLE001 - reported below
                    failures.append(exc)
                    return

        threads = [threading.Thread(target=reader, args=(slot,)) for slot in range(readers)]
        for thread in threads:
            thread.start()
        try:
            for v in range(2, 18):
                feed.publish(Invariant.changes(v))
                # The background refresher reaches it, and every reader reads it before the next version.
                deadline = time.monotonic() + 30
                while not failures and not all(v in versions for versions in seen):
                    assert time.monotonic() < deadline, (v, consumer.status(), seen)
                    time.sleep(0.01)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not failures, failures[0]
        assert consumer.version == 17
        assert all(set(range(2, 18)) <= versions for versions in seen), seen
        assert consumer.status()["refresh_errors"] == 0
        manifests = [feed.dataset.manifest(v) for v in range(1, 18)]
        assert sum(m.snapshot is None for m in manifests) >= 8  # most versions were reached by deltas
        Invariant.check(consumer.view(), full=True)


def test_nested_values_come_back_as_published(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    nested = {"big": 2**62, "list": [{"x": 1.5}, None, {"x": -2.0, "y": "z"}], "text": "ключ"}
    feed.publish([("a", {"doc": nested, "n": 1}), ("b", {"doc": {"big": 1, "list": []}, "n": 2})])
    # Objects are structs: a field an object lacks reads as None.
    a = {"key": "a", "n": 1, "doc": {"big": 2**62, "list": [{"x": 1.5, "y": None}, None, {"x": -2.0, "y": "z"}],
                                     "text": "ключ"}}
    b = {"key": "b", "n": 2, "doc": {"big": 1, "list": [], "text": None}}
    with feed.consumer() as consumer:
        assert consumer.get("a") == a
        assert consumer.get_many(["a", "b"] * 20)[:2] == [a, b]


def test_get_table_holds_the_same_records_in_key_order(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish([(f"m{i:03d}", movie(i)) for i in range(200)])
    feed.publish([("m001", movie(9, 2020)), ("m002", None), ("new", movie(4))])
    with feed.consumer() as consumer, consumer.view() as view:
        keys = ["new", "m002", "absent", "m001", "m150", "m001", *[f"m{i:03d}" for i in range(100, 60, -1)]]
        table = view.get_table(keys)
        assert table.schema == view.table.schema
        expected = [r for r in view.get_many(keys) if r is not None]
        assert table.to_pylist() == expected
        assert view.get_table([]).num_rows == 0


def test_batches_find_keys_in_the_first_and_last_hash_buckets(tmp_path: Path) -> None:
    count = 50
    candidates = [f"k{i}" for i in range(5000)]
    bucket = {k: (zlib.crc32(k.encode()) * count) >> 32 for k in candidates}
    edges = [k for k in candidates if bucket[k] in (0, count - 1)][:6]
    keys = edges + [k for k in candidates if k not in edges][:count - len(edges)]
    assert {bucket[k] for k in edges} == {0, count - 1}
    feed = Feed(tmp_path)
    feed.publish([(k, {"n": i}) for i, k in enumerate(keys)])
    with feed.consumer() as consumer:
        assert consumer.get_many(keys) == [{"key": k, "n": i} for i, k in enumerate(keys)]
        assert consumer.get_table(keys).column("key").to_pylist() == keys


@pytest.mark.parametrize("cached", [False, True])
def test_a_replaced_snapshot_is_freed_at_once(tmp_path: Path, cached: bool) -> None:
    """No reference cycle holds an old View or its snapshot until the garbage collector runs."""
    feed = Feed(tmp_path, snapshot_every=1)
    feed.publish([(f"m{i:03d}", movie(i)) for i in range(50)])
    cache = tmp_path / "cache" if cached else None
    with feed.consumer(max_deltas=0, cache_dir=cache) as consumer:  # every version from its snapshot
        consumer.index("year").get(1990)
        consumer.index(("title", "year")).range(None, None)
        consumer.on_update(lambda update: None)
        old_view, old_base = weakref.ref(consumer.view()), weakref.ref(consumer.view().base)
        gc.disable()
        try:
            feed.publish([("m001", movie(1, 2000))])
            assert consumer.refresh() and consumer.view().base_version == 2
            assert old_view() is None and old_base() is None
        finally:
            gc.enable()
