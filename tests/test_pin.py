"""Pins and rollback: per consumer, store-wide (combe pin / unpin), by reverse deltas when cheaper.

Every version reached is compared with the independent replay of the
changelog up to that version. Which blobs a move fetched is read from the
dataset's blob reads, so the test shows the plan, not only the result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from combe.cli import EXIT_USAGE, main
from combe.format.errors import ConfigError, DatasetNotFound, StoreError
from combe.format.manifest import parse_time
from tests.support.feed import Feed, blob, record_reads, view_state


def history(tmp_path: Path, **options: Any) -> Feed:
    """Seven versions of 300 records; a snapshot at 1 and 6; small deltas in between."""
    feed = Feed(tmp_path, snapshot_every=5, snapshot_ratio=100.0, **options)
    feed.publish([(f"m{i:03d}", {"title": f"Movie {i} " + "x" * 40, "year": 1990}) for i in range(300)])
    for v in range(2, 8):
        feed.publish([(f"m{v:03d}", {"title": f"New {v}", "year": 2000 + v}), (f"m{v + 100:03d}", None),
                      (f"new{v}", {"title": "added", "year": v})])
    return feed


def test_rollback_walks_back_by_reverse_deltas_when_cheaper(tmp_path: Path) -> None:
    feed = history(tmp_path)
    with feed.consumer() as consumer:
        assert consumer.version == 7 and consumer.view().base_version == 6
        reads = record_reads(consumer)
        consumer.set_pin(5)  # from snapshot 6 + 1 delta: two reverse deltas, not snapshot 1 + 4 deltas
        assert reads == [blob(feed, 7, "reverse"), blob(feed, 6, "reverse")]
        assert "2 reverse deltas" in consumer.status()["last_load"]
        assert view_state(consumer.view()) == feed.states[5]
        reads.clear()
        consumer.set_pin(2)
        assert reads == [blob(feed, v, "reverse") for v in (5, 4, 3)]
        assert view_state(consumer.view()) == feed.states[2]
        reads.clear()
        consumer.set_pin(7)  # forward again: the loaded snapshot 6 plus one delta, not five deltas
        assert reads == [blob(feed, 7, "delta")]
        assert consumer.status()["last_load"].startswith("snapshot 6 (already loaded) + 1 delta")
        assert view_state(consumer.view()) == feed.states[7]


def test_rollback_loads_a_snapshot_when_the_chain_would_be_too_long(tmp_path: Path) -> None:
    feed = history(tmp_path)
    with feed.consumer(max_deltas=2) as consumer:
        reads = record_reads(consumer)
        consumer.set_pin(2)
        assert reads == [blob(feed, 1, "snapshot"), blob(feed, 2, "delta")]
        assert view_state(consumer.view()) == feed.states[2]
        reads.clear()
        consumer.set_pin(1)  # back to the loaded snapshot: nothing to fetch
        assert reads == []
        assert view_state(consumer.view()) == feed.states[1]


def test_consumer_pin_holds_while_the_store_moves_on(tmp_path: Path) -> None:
    feed = history(tmp_path)
    with feed.consumer(pin=3) as consumer:
        assert view_state(consumer.view()) == feed.states[3]
        feed.publish([("late", {"title": "late", "year": 1})])
        assert not consumer.refresh()
        status = consumer.status()
        assert (status["version"], status["announced"], status["pin"], status["serving"]) == (3, 8, 3, 3)
        assert status["seconds_behind"] == 0.0
        consumer.set_pin(None)
        assert consumer.version == 8 and view_state(consumer.view()) == feed.states[8]


def pin_cli(feed: Feed, *args: str) -> int:
    return main([args[0], "--store", feed.store, "--dataset", feed.name, *args[1:]])


def test_store_wide_pin_and_unpin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = history(tmp_path)
    with feed.consumer() as follower, feed.consumer(pin=6) as own_pin:
        assert pin_cli(feed, "pin", "4", "--json") == 0
        assert json.loads(capsys.readouterr().out) == {"dataset": "movies", "announced": 7, "pin": 4,
                                                        "previous_pin": None, "serving": 4}
        assert feed.dataset.announced().pointer.version == 7  # type: ignore[union-attr]
        assert follower.refresh() and follower.version == 4
        assert view_state(follower.view()) == feed.states[4]
        assert not own_pin.refresh() and own_pin.version == 6  # a consumer's own pin wins
        status = follower.status()
        assert (status["store_pin"], status["serving"], status["announced"]) == (4, 4, 7)

        feed.publish([("late", {"title": "late", "year": 1})])  # the producer carries the pin over
        assert feed.dataset.announced().pointer.pin == 4  # type: ignore[union-attr]
        assert not follower.refresh() and follower.version == 4

        assert pin_cli(feed, "unpin") == 0
        assert "no store-wide pin" in capsys.readouterr().out
        assert follower.refresh() and follower.version == 8
        assert view_state(follower.view()) == feed.states[8]


def test_pin_refuses_versions_that_do_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = history(tmp_path)
    assert pin_cli(feed, "pin", "9") == 2
    assert "versions run from 1 to the announced version 7" in capsys.readouterr().err
    assert pin_cli(feed, "pin", "0") == 2
    assert feed.dataset.announced().pointer.pin is None  # type: ignore[union-attr]
    assert main(["pin", "--store", feed.store, "--dataset", "unpublished", "1"]) == 1
    assert "has no announced version" in capsys.readouterr().err


def test_status_reports_a_failed_refresh_and_how_far_behind(tmp_path: Path) -> None:
    feed = history(tmp_path)
    with feed.consumer() as consumer:
        version = feed.publish([("late", {"title": "late", "year": 1})])
        (Path(feed.store) / feed.name / blob(feed, version, "delta")).unlink()
        with pytest.raises(StoreError):
            consumer.refresh()
        announced_at = parse_time(feed.dataset.announced().pointer.at).timestamp()  # type: ignore[union-attr]
        before = time.time()
        status = consumer.status()
        after = time.time()
        assert (status["version"], status["announced"], status["serving"]) == (7, 8, 8)
        assert status["last_error"] and status["last_error_at"] >= status["last_refresh"]
        # The seconds since version 8 was announced, measured when status() was called.
        assert before - announced_at - 0.001 <= status["seconds_behind"] <= after - announced_at + 0.001
        assert consumer.get("late") is None  # still serving version 7


def written_not_announced(tmp_path: Path) -> Feed:
    """Seven announced versions and the manifest of an eighth that its producer stopped before announcing."""
    feed = history(tmp_path)
    announced = feed.dataset.announced()
    feed.publish([("late", {"title": "never announced", "year": 1})])
    assert announced.pointer is not None
    back = feed.dataset.announce(announced.pointer, feed.dataset.announced().tag)  # as if never announced
    assert back is not None and feed.dataset.versions()[-1] == 8 and feed.dataset.announced().version == 7
    return feed


def test_a_version_written_but_never_announced_is_never_served(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    feed = written_not_announced(tmp_path)
    with pytest.raises(ConfigError, match="only announced versions are served"):
        feed.consumer(pin=8)
    with feed.consumer(pin=7) as consumer:
        with pytest.raises(ConfigError, match="versions run from 1 to the announced version 7"):
            consumer.set_pin(8)
        assert consumer.version == 7 and consumer.get("late") is None
    for command in (["get", "--at", "8", "late"], ["pin", "8"]):
        assert pin_cli(feed, *command) == EXIT_USAGE
        assert "only announced versions are served" in capsys.readouterr().err
    assert feed.dataset.announced().pointer.pin is None  # type: ignore[union-attr]


def test_a_refused_pin_leaves_the_consumer_as_it_was(tmp_path: Path) -> None:
    feed = written_not_announced(tmp_path)
    removed = Path(feed.store) / feed.name / "versions" / "000000000002.json"
    removed.unlink()  # as gc would have removed version 2
    with feed.consumer(pin=6) as consumer:  # snapshot 6: needs no manifest before it
        before = consumer.status()
        for bad, error in ((8, ConfigError), (0, ConfigError), (2, DatasetNotFound)):
            with pytest.raises(error):
                consumer.set_pin(bad)
            assert consumer.pin == 6 and consumer.version == 6
            assert view_state(consumer.view()) == feed.states[6]
            assert consumer.refresh() is False  # still pinned to 6: later refreshes succeed
            status = consumer.status()
            assert (status["pin"], status["serving"], status["version"]) == (6, 6, 6)
            assert status["last_error"] is None and status["refresh_errors"] == 0 and status["seconds_behind"] == 0
            assert status["last_load"] == before["last_load"]
        consumer.set_pin(None)  # and a good pin still moves it
        assert consumer.pin is None and consumer.version == 7
