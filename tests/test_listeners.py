"""Refresh listeners: every change set equals the real difference between the two replayed versions."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytest

from combe.consumer import Consumer, Update
from tests.support.feed import Feed
from tests.support.written import Written, schema_of


def difference(before: dict[Any, str], after: dict[Any, str]) -> tuple[set[Any], set[Any], set[Any]]:
    added = set(after) - set(before)
    removed = set(before) - set(after)
    updated = {k for k in set(before) & set(after) if before[k] != after[k]}
    return added, updated, removed


def assert_real(update: Update, feed: Feed) -> None:
    before, after = feed.states[update.from_version], feed.states[update.to_version]
    assert (set(update.added), set(update.updated), set(update.removed)) == difference(before, after), update


def test_change_sets_equal_the_real_difference_on_every_path(tmp_path: Path) -> None:
    rng = random.Random(5)
    feed = Feed(tmp_path, snapshot_every=3)
    feed.publish([(f"k{i:03d}", {"n": i}) for i in range(150)])
    updates: list[Update] = []
    plans: list[str] = []
    with feed.consumer(max_deltas=3) as consumer:
        consumer.on_update(updates.append)
        for _ in range(8):
            for _ in range(rng.choice([1, 1, 2, 3])):  # sometimes the consumer skips versions
                changes: list[tuple[Any, Any]] = [(f"k{rng.randrange(180):03d}", {"n": rng.randrange(5)})
                                                  for _ in range(15)]
                changes += [(f"k{rng.randrange(180):03d}", None) for _ in range(5)]
                key = f"k{rng.randrange(150):03d}"  # changed, then changed back within one refresh
                changes += [(key, {"n": -1}), (key, {"n": rng.randrange(5)})]
                feed.publish(changes)
            assert consumer.refresh()
            plans.append(consumer.status()["last_load"])
        latest = max(feed.states)
        for version in (latest - 1, 2, 9, 4, 1, latest):  # rollbacks and jumps, by reverse deltas or snapshots
            consumer.set_pin(version)
            plans.append(consumer.status()["last_load"])
    # Every way a change set is found: deltas from the view, deltas from its snapshot, a whole new snapshot.
    assert any(p.startswith("the current view") for p in plans), plans
    assert any("reverse" in p for p in plans), plans
    assert any("already loaded" in p for p in plans), plans
    assert any(p.startswith("snapshot") and "already" not in p for p in plans), plans
    assert len(updates) == 14
    starts = {u.from_version for u in updates}
    assert len(starts) > 5
    for update in updates:
        assert_real(update, feed)
    assert any(len(update) for update in updates)


def test_a_failing_listener_is_logged_and_does_not_break_refresh(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    feed = Feed(tmp_path)
    feed.publish([("a", {"n": 1}), ("b", {"n": 2})])
    seen: list[Update] = []
    with feed.consumer() as consumer:

        @consumer.on_update
        def broken(update: Update) -> None:
            raise RuntimeError("listener bug")

        consumer.on_update(seen.append)
        feed.publish([("a", {"n": 5}), ("b", None), ("c", {"n": 3})])
        with caplog.at_level(logging.ERROR, logger="combe.consumer"):
            assert consumer.refresh()
        assert consumer.version == 2
        assert "listener bug" in caplog.text and "broken" in caplog.text
        assert seen == [Update("movies", 1, 2, frozenset({"c"}), frozenset({"a"}), frozenset({"b"}))]
        assert consumer.status()["last_error"] is None
        consumer.remove_listener(broken)
        feed.publish([("a", {"n": 6})])
        assert consumer.refresh() and len(seen) == 2


def test_a_projected_consumer_hears_about_its_columns(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish([("a", {"n": 1, "other": "x"}), ("b", {"n": 2, "other": "y"})])
    seen: list[Update] = []
    with feed.consumer(columns=["n"]) as consumer:
        consumer.on_update(seen.append)
        feed.publish([("a", {"n": 1, "other": "changed"}), ("b", {"n": 3, "other": "y"})])
        assert consumer.refresh()
    assert seen[0].updated == {"b"}  # "a" changed only in a column this consumer does not load


def test_a_listener_may_refresh_and_read_the_new_version(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish([("a", {"n": 1})])
    seen: list[tuple[int, Any]] = []
    with feed.consumer() as consumer:

        @consumer.on_update
        def check(update: Update) -> None:
            assert not consumer.refresh()  # nothing newer: the nested poll finds the same version
            seen.append((consumer.version, consumer.get("a")))

        feed.publish([("a", {"n": 2})])
        assert consumer.refresh()
    assert seen == [(2, {"key": "a", "n": 2})]


def test_change_sets_of_nested_columns_by_deltas_and_by_snapshots(tmp_path: Path) -> None:
    schema = schema_of(tags="list<string>", who="struct<id:int64,name:string>", attrs="map<string,list<int64>>")
    grown = schema_of(tags="list<string>", who="struct<id:int64,name:string,age:int64>",
                      attrs="map<string,list<int64>>")
    written = Written(str(tmp_path))
    written.publish({f"k{i}": {"tags": [str(i)], "who": {"id": i, "name": "n"}, "attrs": {"a": [i]}}
                     for i in range(6)}, schema)
    updates: list[Update] = []
    plans: list[str] = []
    with Consumer(str(tmp_path), written.dataset.name, max_deltas=3) as consumer:
        consumer.on_update(updates.append)
        steps = [
            # one change in each column, deep inside; k4 changes and changes back within the second refresh
            ({"k0": {"tags": ["0", None], "who": {"id": 0, "name": "n"}, "attrs": {"a": [0]}},
              "k1": {"tags": ["1"], "who": {"id": 1, "name": None}, "attrs": {"a": [1]}},
              "k2": {"tags": ["2"], "who": {"id": 2, "name": "n"}, "attrs": {"a": [2], "b": []}},
              "k3": None, "k9": {"tags": []}}, schema, False),
            ({"k4": {"tags": ["changed"]}}, schema, False),
            ({"k4": {"tags": ["4"], "who": {"id": 4, "name": "n"}, "attrs": {"a": [4]}},
              "k5": {"tags": ["5"], "who": {"id": 5, "name": "n", "age": 50}, "attrs": {"a": [5]}}}, grown, False),
            ({"k0": {"tags": []}, "k2": {"tags": ["2"], "who": {"id": 2, "name": "n"}, "attrs": {"a": [2]}}},
             grown, True),  # a snapshot: compared whole
        ]
        for changes, version_schema, snapshot in steps:
            written.publish(changes, version_schema, snapshot=snapshot)
            if written.version != 3:  # versions 2 and 3 arrive together
                assert consumer.refresh()
                plans.append(consumer.status()["last_load"])
        for version in (3, 1):  # back past the growth: by reverse deltas, then from snapshot 1
            consumer.set_pin(version)
            plans.append(consumer.status()["last_load"])
    assert [(u.from_version, u.to_version) for u in updates] == [(1, 2), (2, 4), (4, 5), (5, 3), (3, 1)]
    assert [len(u) for u in updates] == [5, 1, 2, 4, 6]
    # Compared key by key (deltas) and whole (a snapshot loaded), forward and back across the growth.
    assert [p.split(" ")[0] for p in plans] == ["the", "the", "snapshot", "the", "snapshot"], plans
    assert "reverse" in plans[3], plans
    for update in updates:
        # The truth: the records as written, both read in the newer version's schema.
        newer = max(update.from_version, update.to_version)
        before, after = written.states[update.from_version], written.states[update.to_version]
        changed = {key for key in set(before) & set(after)
                   if written.record(update.from_version, key, newer) != written.record(update.to_version, key, newer)}
        assert (set(update.added), set(update.updated), set(update.removed)) == (
            set(after) - set(before), changed, set(before) - set(after)), update
