"""The consumer: verified loads, atomic refresh under concurrent readers, pins and rollback, cache."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from combe.consumer import Consumer
from combe.format.errors import FormatError, IntegrityError, StoreError
from combe.format.manifest import Pointer, utc_now
from tests.support.changelog import canon, table_state
from tests.support.feed import Feed


def flip_byte(path: Path) -> bytes:
    data = path.read_bytes()
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(corrupted))
    return data


def state_of(consumer: Consumer) -> dict[Any, str]:
    with consumer.view() as view:
        return table_state(view.table, view.schema)


def movies(count: int, year: int) -> list[tuple[str, dict[str, Any]]]:
    return [(f"m{i:03d}", {"title": f"Movie {i}", "year": year}) for i in range(count)]


# -- integrity -------------------------------------------------------------------------------


def test_a_new_consumer_refuses_a_corrupted_blob(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish(movies(20, 2000))
    snapshot = feed.blob_file(1, "snapshot")
    flip_byte(snapshot)
    with pytest.raises(IntegrityError) as caught:
        Consumer(feed.store, "movies")
    assert snapshot.name in str(caught.value) and "sha256" in str(caught.value)


def test_a_running_consumer_keeps_serving_when_a_delta_is_corrupted(tmp_path: Path) -> None:
    feed = Feed(tmp_path, snapshot_ratio=1e9)  # version 2 is a delta only
    feed.publish(movies(20, 2000))
    with Consumer(feed.store, "movies") as consumer:
        assert consumer.version == 1
        feed.publish([("m001", {"title": "Changed", "year": 2001}), ("m002", None)])
        delta = feed.blob_file(2, "delta")
        original = flip_byte(delta)

        with pytest.raises(IntegrityError, match=delta.name):
            consumer.refresh()
        assert consumer.version == 1
        assert consumer.get("m001") == {"key": "m001", "title": "Movie 1", "year": 2000}
        assert state_of(consumer) == feed.states[1]
        status = consumer.status()
        assert status["version"] == 1 and status["announced"] == 2
        assert delta.name in status["last_error"]

        with pytest.raises(IntegrityError):  # still refused on the next try
            consumer.refresh()
        assert consumer.version == 1

        delta.write_bytes(original)  # repaired: the next refresh moves on
        assert consumer.refresh() is True
        assert consumer.version == 2
        assert consumer.get("m001") == {"key": "m001", "title": "Changed", "year": 2001}
        assert consumer.get("m002") is None
        assert state_of(consumer) == feed.states[2]


def test_a_corrupted_reverse_delta_is_refused_on_rollback(tmp_path: Path) -> None:
    feed = Feed(tmp_path, snapshot_every=2)
    feed.publish(movies(200, 2000))
    feed.publish([("m001", {"title": "Two", "year": 2002})])
    feed.publish([("m002", {"title": "Three", "year": 2003})])  # a snapshot (every 2 versions)
    with Consumer(feed.store, "movies") as consumer:
        assert consumer.view().base_version == 3
        reverse = feed.blob_file(3, "reverse")
        flip_byte(reverse)
        with pytest.raises(IntegrityError, match=reverse.name):
            consumer.set_pin(2)
        assert consumer.version == 3 and state_of(consumer) == feed.states[3]


@pytest.mark.parametrize("name", ["announced.json", "versions/000000000001.json"])
def test_a_truncated_manifest_or_announcement_is_a_format_error(tmp_path: Path, name: str) -> None:
    feed = Feed(tmp_path)
    feed.publish(movies(5, 2000))
    path = Path(feed.store) / "movies" / name
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(FormatError, match=f"{path}.* is not valid JSON"):
        Consumer(feed.store, "movies")


# -- readers during refresh --------------------------------------------------------------------


def test_readers_never_see_two_versions_mixed(tmp_path: Path) -> None:
    keys = [f"k{i:02d}" for i in range(40)]
    feed = Feed(tmp_path, snapshot_every=5)
    feed.publish([(key, {"v": 1, "key_again": key}) for key in keys])
    stop = threading.Event()
    errors: list[str] = []
    seen: list[set[int]] = [set() for _ in range(4)]
    reads = [0] * 4

    with Consumer(feed.store, "movies") as consumer:
        def reader(number: int) -> None:
            last = 0
            try:
                while not stop.is_set():
                    with consumer.view() as view:
                        version = view.version
                        records = [view.get(key) for key in keys]
                        if number == 0:
                            records += view.table.to_pylist()
                    versions = {record["v"] for record in records if record is not None}
                    if versions != {version} or None in records:
                        errors.append(f"view {version} returned versions {sorted(versions)}")
                    if version < last:
                        errors.append(f"went back from {last} to {version}")
                    last = version
                    outside = consumer.get(keys[-1])
                    if outside is None or outside["v"] < version:
                        errors.append(f"get() after view {version} returned {outside}")
                    seen[number].add(version)
                    reads[number] += 1
                    time.sleep(0.0005)  # let the publisher have the GIL now and then
            except Exception as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(f"reader {number}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        try:
            for version in range(2, 16):
                feed.publish([(key, {"v": version, "key_again": key}) for key in keys])
                assert consumer.refresh() is True
                assert consumer.version == version
                # Every reader reads this version before the next swap, so the readers overlap every refresh.
                assert wait_for(lambda v=version: bool(errors) or all(v in versions for versions in seen)), seen
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        assert not errors, errors[:5]
        assert all(set(range(2, 16)) <= versions for versions in seen), seen
        assert consumer.version == 15 and state_of(consumer) == feed.states[15]


# -- pins and rollback -------------------------------------------------------------------------


@pytest.fixture
def history(tmp_path: Path) -> Feed:
    """Five versions: a large snapshot at 1, small changes after, snapshots at 3 and 5."""
    feed = Feed(tmp_path, snapshot_every=2)
    feed.publish(movies(200, 2000))
    feed.publish([("m001", {"title": "Two", "year": 2002}), ("m199", None)])
    feed.publish([("m002", {"title": "Three", "year": 2003}), ("new3", {"title": "Added in 3", "rating": 7.5})])
    feed.publish([("m001", None), ("new4", {"title": "Added in 4", "tags": ["x", None]})])
    feed.publish([("new3", {"title": "Changed in 5", "rating": 8.0}), ("m003", {"title": "Five", "year": 2005})])
    assert [feed.dataset.manifest(v).snapshot is not None for v in range(1, 6)] == [True, False, True, False, True]
    return feed


def check_version(consumer: Consumer, feed: Feed, version: int) -> None:
    assert consumer.version == version
    assert state_of(consumer) == feed.states[version]
    probes = ["m001", "m002", "m003", "m199", "new3", "new4", "missing"]
    for key, record in zip(probes, consumer.get_many(probes)):
        assert canon(record) == feed.states[version].get(key), (version, key)


def test_pin_at_construction(history: Feed) -> None:
    for version in range(1, 6):
        with Consumer(history.store, "movies", pin=version) as consumer:
            check_version(consumer, history, version)
            assert consumer.refresh() is False  # a pinned consumer stays


def test_set_pin_walks_back_by_reverse_deltas(history: Feed) -> None:
    with Consumer(history.store, "movies", pin=4) as consumer:
        assert consumer.view().base_version == 3
        consumer.set_pin(2)  # reverse deltas 4 and 3 are far smaller than snapshot 1
        check_version(consumer, history, 2)
        assert consumer.view().base_version == 3, "went back by reverse deltas, not by reloading snapshot 1"
        consumer.set_pin(4)
        check_version(consumer, history, 4)
        consumer.set_pin(1)
        check_version(consumer, history, 1)
        consumer.set_pin(None)  # follow the store again
        check_version(consumer, history, 5)
        consumer.set_pin(3)
        check_version(consumer, history, 3)


def test_rollback_by_the_store_pin(history: Feed) -> None:
    dataset = history.dataset
    with Consumer(history.store, "movies") as consumer:
        check_version(consumer, history, 5)
        announced = dataset.announced()
        pinned = Pointer("movies", 5, utc_now(), "test", pin=2)
        assert dataset.announce(pinned, announced.tag) is not None
        assert consumer.refresh() is True
        check_version(consumer, history, 2)
        assert consumer.status()["store_pin"] == 2
        unpinned = Pointer("movies", 5, utc_now(), "test", pin=None)
        assert dataset.announce(unpinned, dataset.announced().tag) is not None
        assert consumer.refresh() is True
        check_version(consumer, history, 5)


def test_every_path_between_versions(history: Feed) -> None:
    """From every version to every other: deltas, reverse deltas or a snapshot, the state is the replay."""
    with Consumer(history.store, "movies", pin=1, max_deltas=3) as consumer:
        for start in range(1, 6):
            for target in range(1, 6):
                consumer.set_pin(start)
                consumer.set_pin(target)
                check_version(consumer, history, target)


# -- background refresh, cache ---------------------------------------------------------------


def wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_background_refresh_picks_up_new_versions_and_close_stops_it(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish(movies(10, 2000))
    before = set(threading.enumerate())
    consumer = Consumer(feed.store, "movies", refresh_interval=0.05)
    try:
        threads = [t for t in set(threading.enumerate()) - before if t.name.startswith("combe-refresh")]
        assert len(threads) == 1 and threads[0].daemon
        feed.publish([("m001", {"title": "Two", "year": 2002})])
        assert wait_for(lambda: consumer.version == 2)
        assert consumer.get("m001") == {"key": "m001", "title": "Two", "year": 2002}
        feed.publish([("m002", None)])
        assert wait_for(lambda: consumer.version == 3)
        assert consumer.status()["last_error"] is None
    finally:
        consumer.close()
    assert not threads[0].is_alive()  # joined by close(): nothing can refresh this consumer any more
    feed.publish([("m003", None)])
    assert consumer.version == 3  # the last View still serves
    assert consumer.get("m004") == {"key": "m004", "title": "Movie 4", "year": 2000}
    consumer.close()  # twice is harmless


def test_background_refresh_survives_a_failure(tmp_path: Path) -> None:
    feed = Feed(tmp_path, snapshot_ratio=1e9)
    feed.publish(movies(10, 2000))
    feed.publish([("m001", {"title": "Two", "year": 2002})])
    original = flip_byte(feed.blob_file(2, "delta"))
    feed.dataset.set_pin(1)  # the store holds consumers at version 1 while they start
    with Consumer(feed.store, "movies", refresh_interval=0.02) as consumer:
        assert consumer.version == 1
        feed.dataset.set_pin(None)  # now version 2, whose delta is corrupted
        # the refresher keeps trying, and failing, in the background
        assert wait_for(lambda: consumer.status()["refresh_errors"] >= 3)
        assert consumer.version == 1 and consumer.get("m001")["title"] == "Movie 1"
        feed.blob_file(2, "delta").write_bytes(original)
        # backoff grows from 0.02 s; a repaired store is picked up within a few seconds
        assert wait_for(lambda: consumer.version == 2)
        assert consumer.get("m001")["title"] == "Two"


def test_cache_dir_serves_a_second_consumer_without_the_store_blobs(tmp_path: Path) -> None:
    feed = Feed(tmp_path, snapshot_ratio=1e9)
    feed.publish(movies(30, 2000))
    feed.publish([("m001", {"title": "Two", "year": 2002}), ("m002", None)])
    cache = tmp_path / "cache"
    with Consumer(feed.store, "movies", cache_dir=cache) as first:
        assert first.version == 2
        assert state_of(first) == feed.states[2]
    cached = sorted(p.name for p in cache.glob("*.arrow"))  # each beside its .check record
    manifests = [feed.dataset.manifest(v) for v in (1, 2)]
    assert cached == sorted(f"{ref.sha256}.arrow" for ref in (manifests[0].snapshot, manifests[1].delta))

    for info in feed.dataset.store.list("blobs/"):
        feed.dataset.store.delete(info.path)
    with pytest.raises(StoreError):
        Consumer(feed.store, "movies")  # the blobs really are gone from the store
    with Consumer(feed.store, "movies", cache_dir=cache) as second:
        assert second.version == 2
        assert state_of(second) == feed.states[2]
        assert second.get("m001") == {"key": "m001", "title": "Two", "year": 2002}
