"""Diff and history against brute force: every version loaded whole by a Consumer, compared as plain dicts.

The dataset has tombstones, keys removed and added again, a key changed and
changed back, a column added by a delta, a type change (a snapshot-only
version), and, after gc with a store-wide pin on version 3, versions removed
from the middle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import pytest

from combe.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from combe.consumer.timeline import Timeline
from combe.format.errors import ConfigError, DatasetNotFound, KeyTypeError
from combe.producer.retention import Retention, collect_garbage
from tests.support.changelog import Change, canon
from tests.support.feed import Feed, view_state

State = dict[Any, str]


def row(i: int, **changes: Any) -> dict[str, Any]:
    return {"title": f"Movie {i}", "n": i, **changes}


# version -> the changes that make it. Version 4 turns "n" into a float column (a snapshot-only version).
VERSIONS: dict[int, list[Change]] = {
    1: [(f"k{i:02d}", row(i)) for i in range(20)],
    2: [("k01", row(1, title="One")), ("k02", None), ("k20", row(20))],
    3: [("k02", row(2, title="Two again")), ("k03", row(3, n=33)), ("k04", row(4, genre="drama")), ("k05", None)],
    4: [("k06", row(6, n=6.5))],
    5: [("k01", row(1)), ("k07", None), ("k21", row(21))],
    6: [("k21", None), ("k08", row(8, tags=["a", "b"])), ("k02", None)],
    7: [("k07", row(7, title="Seven is back")), ("k09", row(9, title="Nine"))],
    8: [("k09", row(9)), ("k10", row(10, title="Ten"))],
    9: [("k11", None), ("k12", row(12, genre="comedy")), ("k22", row(22))],
}
GONE = (4, 6)  # removed by gc: pinned 3, newest two kept, each with the chain it loads from


@dataclass
class Published:
    feed: Feed
    states: dict[int, State]  # every version as a Consumer loads it whole, taken before gc

    def timeline(self) -> Timeline:
        return Timeline(self.feed.dataset)


def whole_states(feed: Feed, versions: list[int]) -> dict[int, State]:
    states = {}
    for version in versions:
        with feed.consumer(pin=version) as consumer:
            states[version] = view_state(consumer.view())
    return states


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    feed = Feed(tmp_path_factory.mktemp("timeline"), snapshot_every=3, snapshot_ratio=1000.0,
                allow_schema_change=True)
    for version, changes in VERSIONS.items():
        assert feed.publish(changes) == version
    assert feed.dataset.manifest(4).schema_change and feed.dataset.manifest(4).delta is None
    yield Published(feed, whole_states(feed, list(VERSIONS)))


def expected_diff(old: State, new: State) -> list[tuple[Any, str, str | None, str | None]]:
    found = []
    for key in sorted(old.keys() | new.keys()):
        if key not in new:
            found.append((key, "removed", old[key], None))
        elif key not in old:
            found.append((key, "added", None, new[key]))
        elif old[key] != new[key]:
            found.append((key, "updated", old[key], new[key]))
    return found


def diff_rows(timeline: Timeline, a: int, b: int, method: str | None) -> tuple[list[Any], str]:
    diff = timeline.diff(a, b, method=method)
    assert (diff.from_version, diff.to_version) == (a, b)
    rows = [(c.key, c.op, canon(c.before), canon(c.after)) for c in diff]
    assert diff.counts == {op: sum(1 for r in rows if r[1] == op) for op in ("added", "updated", "removed")}
    assert diff.page(1, 2) == list(diff)[1:3]
    return rows, diff.method


def deltas_possible(a: int, b: int, kept: set[int]) -> bool:
    low, high = min(a, b), max(a, b)
    return all(v in kept and v != 4 for v in range(low + 1, high + 1))


def test_every_pair_of_versions_matches_the_two_states_compared_whole(published: Published) -> None:
    timeline = published.timeline()
    states = published.states
    methods = {"deltas": 0, "states": 0}
    for a, b in product(states, states):
        expected = expected_diff(states[a], states[b])
        rows, method = diff_rows(timeline, a, b, None)
        assert rows == expected, (a, b, method)
        methods[method] += 1
        # Each way asked for by name too, but for the one just chosen (the same computation again).
        if method != "states":
            assert diff_rows(timeline, a, b, "states")[0] == expected, (a, b)
        if deltas_possible(a, b, set(states)):
            if method != "deltas":
                assert diff_rows(timeline, a, b, "deltas")[0] == expected, (a, b)
        else:
            with pytest.raises(ConfigError, match="cannot be read from deltas"):
                timeline.diff(a, b, method="deltas")
    assert methods["deltas"] and methods["states"]  # both ways were chosen somewhere


def test_the_cheaper_way_is_taken_and_its_bytes_are_said(published: Published) -> None:
    timeline = published.timeline()
    manifest = published.feed.dataset.manifest
    nine = manifest(9)
    assert nine.delta is not None and nine.reverse is not None
    adjacent = timeline.diff(8, 9)
    assert adjacent.method == "deltas" and adjacent.bytes_read == nine.delta.bytes + nine.reverse.bytes
    across = timeline.diff(3, 5)  # version 4 has no deltas: only the states tell
    assert across.method == "states"
    snapshot4 = manifest(4).snapshot
    assert snapshot4 is not None and across.bytes_read > snapshot4.bytes
    same = timeline.diff(5, 5)
    assert len(same) == 0 and same.counts == {"added": 0, "updated": 0, "removed": 0}


def expected_history(states: dict[int, State], key: Any) -> list[tuple[int, int | None, str, str | None]]:
    found: list[tuple[int, int | None, str, str | None]] = []
    previous: int | None = None
    for version in sorted(states):
        now = states[version].get(key)
        if previous is None:
            if now is not None:
                found.append((version, None, "added" if version == 1 else "present", now))
        else:
            before = states[previous].get(key)
            if before != now:
                op = "added" if before is None else "removed" if now is None else "updated"
                found.append((version, previous, op, now))
        previous = version
    return found


def history_rows(timeline: Timeline, key: Any) -> list[tuple[int, int | None, str, str | None]]:
    return [(c.version, c.since, c.op, canon(c.record)) for c in timeline.history(key).changes]


def every_key(states: dict[int, State]) -> list[Any]:
    return sorted({key for state in states.values() for key in state} | {"never"})


def test_history_of_every_key_matches_the_states(published: Published) -> None:
    timeline = published.timeline()
    for key in every_key(published.states):
        assert history_rows(timeline, key) == expected_history(published.states, key), key
    k02 = timeline.history("k02")
    assert [(c.version, c.op) for c in k02.changes] == [(1, "added"), (2, "removed"), (3, "added"),
                                                          (4, "updated"), (6, "removed")]
    assert k02.removed_by_gc == [] and k02.to_version == 9
    assert [c.created_at for c in k02.changes] == [published.feed.dataset.manifest(v).created_at
                                                   for v in (1, 2, 3, 4, 6)]


def test_history_up_to_a_version_and_bad_arguments(published: Published) -> None:
    timeline = published.timeline()
    upto = timeline.history("k09", to_version=7)
    assert upto.to_version == 7
    assert [(c.version, c.since, c.op, canon(c.record)) for c in upto.changes] == \
        expected_history({v: s for v, s in published.states.items() if v <= 7}, "k09")
    with pytest.raises(KeyTypeError):
        timeline.history(7)
    with pytest.raises(DatasetNotFound, match="no announced version 10"):
        timeline.history("k01", to_version=10)
    for bad in (0, -1, "2", True, 1.0):
        with pytest.raises(ConfigError, match="whole numbers from 1"):
            timeline.diff(bad, 2)
    with pytest.raises(ConfigError, match="method='both'"):
        timeline.diff(1, 2, method="both")
    with pytest.raises(DatasetNotFound, match="no announced version 10"):
        timeline.diff(1, 10)


def test_a_consumer_diffs_from_the_version_it_serves_with_every_column(published: Published) -> None:
    feed, states = published.feed, published.states
    with feed.consumer(columns=["title"], pin=9) as consumer:
        diff = consumer.diff(7)
        assert (diff.from_version, diff.to_version) == (7, 9)
        assert [(c.key, c.op, canon(c.before), canon(c.after)) for c in diff] == expected_diff(states[7], states[9])
        assert "n" in next(iter(diff)).after  # every column, not only the ones this consumer loads
        history = consumer.history("k10")
        assert [(c.version, c.op) for c in history.changes] == [(1, "added"), (4, "updated"), (8, "updated")]
    with feed.consumer(pin=5) as consumer:
        # The states of 3 and 5: version 5's View is held already, so only version 3 is read.
        diff = consumer.diff(3, method="states")
        assert diff.method == "states"
        alone = published.timeline().diff(3, 5, method="states")
        assert diff.bytes_read < alone.bytes_read
        assert list(diff) == list(alone)


def cli(feed: Feed, *argv: str) -> list[str]:
    return [argv[0], "--store", feed.store, "--dataset", feed.name, *argv[1:]]


def test_combe_diff_and_history(published: Published, capsys: pytest.CaptureFixture[str]) -> None:
    feed, states = published.feed, published.states
    assert main(cli(feed, "diff", "5", "2", "--json")) == EXIT_OK
    document = json.loads(capsys.readouterr().out)
    assert (document["from"], document["to"], document["method"]) == (5, 2, "states")
    assert [(c["key"], c["op"], canon(c["before"]), canon(c["after"])) for c in document["changes"]] == \
        expected_diff(states[5], states[2])
    assert document["counts"] == Timeline(feed.dataset).diff(5, 2).counts

    assert main(cli(feed, "diff", "8", "9", "--limit", "1")) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    nine = feed.dataset.manifest(9)
    assert nine.delta is not None and nine.reverse is not None
    assert out[0] == (f"movies: version 8 -> 9: +1 added, ~1 updated, -1 removed (from the deltas of version 9: "
                      f"{nine.delta.bytes + nine.reverse.bytes:,} bytes of blobs read)")
    assert out[1:] == ['removed  k11  {"key": "k11", "title": "Movie 11", "n": 11.0}', "... 2 more"]
    assert main(cli(feed, "diff", "7", "8", "--method", "states")) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert "(from both versions' states" in out[0]
    assert out[1:] == ['updated  k09  title: "Nine" -> "Movie 9"', 'updated  k10  title: "Movie 10" -> "Ten"']

    assert main(cli(feed, "history", "k02", "--json")) == EXIT_OK
    document = json.loads(capsys.readouterr().out)
    assert [(c["version"], c["since"], c["op"], canon(c["record"])) for c in document["changes"]] == \
        expected_history(states, "k02")
    assert document["removed_by_gc"] == [] and document["to"] == 9
    assert main(cli(feed, "history", "k07", "--to", "7")) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "movies key 'k07': 4 changes up to version 7"  # version 4 made its n a float
    assert [line.split()[:2] for line in out[1:]] == [["1", "added"], ["4", "updated"], ["5", "removed"],
                                                      ["7", "added"]]

    assert main(cli(feed, "diff", "1", "10")) == EXIT_FAILURE
    assert "no announced version 10" in capsys.readouterr().err
    assert main(cli(feed, "diff", "0", "1")) == EXIT_USAGE
    assert main(cli(feed, "diff", "3", "5", "--method", "deltas")) == EXIT_USAGE
    assert "cannot be read from deltas" in capsys.readouterr().err


def test_after_gc_removed_versions_in_the_middle(published: Published, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last in this module: gc removes versions 4 to 6 from the shared dataset."""
    feed, states = published.feed, published.states
    feed.dataset.set_pin(3)
    collect_garbage(feed.dataset, Retention(keep_versions=2, grace_hours=0))
    kept = feed.dataset.versions()
    assert kept == [1, 2, 3, 7, 8, 9], "the module's dataset should lose exactly versions 4 to 6"
    feed.dataset.set_pin(None)
    timeline = published.timeline()
    kept_states = {v: states[v] for v in kept}
    for a, b in product(kept, kept):
        rows, method = diff_rows(timeline, a, b, None)
        assert rows == expected_diff(states[a], states[b]), (a, b)
        if not deltas_possible(a, b, set(kept)):
            assert method == "states", (a, b)
    with pytest.raises(DatasetNotFound, match="version 5 of movies is no longer in the store"):
        timeline.diff(5, 9)
    for key in every_key(states):
        history = timeline.history(key)
        assert history.removed_by_gc == [GONE]
        assert [(c.version, c.since, c.op, canon(c.record)) for c in history.changes] == \
            expected_history(kept_states, key), key
    k02 = timeline.history("k02")  # removed at 6, inside the gap: seen at 7, against 3
    assert [(c.version, c.since, c.op) for c in k02.changes][-1] == (7, 3, "removed")
    assert main(cli(feed, "history", "k02")) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("versions 4-6 were removed by gc and are skipped")
    assert out[-1].split()[:2] == ["7", "removed"] and out[-1].endswith("- (since 3)")


def test_int64_keys(tmp_path: Path) -> None:
    feed = Feed(tmp_path, "counts", "int64")
    feed.publish([(n, {"n": n}) for n in range(-3, 4)])
    feed.publish([(-3, None), (2, {"n": 20}), (9, {"n": 9})])
    timeline = Timeline(feed.dataset)
    assert [(c.key, c.op) for c in timeline.diff(1, 2)] == [(-3, "removed"), (2, "updated"), (9, "added")]
    assert [(c.version, c.op, c.record) for c in timeline.history("2").changes] == [
        (1, "added", {"key": 2, "n": 2}), (2, "updated", {"key": 2, "n": 20})]
