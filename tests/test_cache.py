"""The consumer's blob cache: restarts without downloads (requests counted through a proxy in front
of moto's S3 server), damaged files fetched again, several processes sharing one directory, and a
size bound that never takes a file a View in use needs."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from combe.format.errors import ConfigError
from combe.format.manifest import BlobRef
from tests.support.changelog import Change, replay
from tests.support.fault_proxy import FaultProxy
from tests.support.feed import Feed, view_state
from tests.support.properties import examples
from tests.support.s3_server import S3Server

DATASET = "movies"


def movies(count: int, tag: str = "") -> list[Change]:
    return [(f"m{i:03d}", {"title": f"Movie {i}{tag}", "year": 1990 + i % 30}) for i in range(count)]


def blob_gets(proxy: FaultProxy) -> list[str]:
    """The blob paths fetched through the proxy, in order."""
    return [e.path.rsplit("/", 1)[-1] for e in proxy.exchanges("GET") if "/blobs/" in e.path]


def cached(directory: Path) -> dict[str, list[str]]:
    """The cache directory's files by kind."""
    names = sorted(p.name for p in directory.iterdir())
    return {kind: [n for n in names if n.endswith(kind)] for kind in (".arrow", ".check")} | {
        "other": [n for n in names if not n.endswith((".arrow", ".check"))]}


def file_of(directory: Path, ref: BlobRef | None) -> Path:
    assert ref is not None
    return directory / f"{ref.sha256}.arrow"


@pytest.fixture
def s3_feed(s3_server: S3Server, s3_url: str, tmp_path: Path) -> Feed:
    """Version 1 (a snapshot) and version 2 (a delta) on S3, published without the proxy."""
    feed = Feed(tmp_path, store=s3_url, storage_options=s3_server.storage_options(), snapshot_ratio=1e9)
    feed.publish(movies(400))
    feed.publish([("m001", {"title": "Movie 1 (remastered)", "year": 2001}), ("m002", None)])
    return feed


@pytest.mark.s3
def test_a_restart_loads_from_the_cache_without_downloading_blobs(
    s3_feed: Feed, s3_server: S3Server, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    options = s3_server.storage_options(fault_proxy.url)
    manifests = [s3_feed.dataset.manifest(v) for v in (1, 2)]
    refs = [ref for ref in (manifests[0].snapshot, manifests[1].delta) if ref]
    with s3_feed.consumer(storage_options=options, cache_dir=cache) as first:
        assert view_state(first.view()) == s3_feed.states[2]
        assert first.status()["last_load"] == f"snapshot 1 + 1 delta ({sum(ref.bytes for ref in refs)} bytes fetched)"
    assert sorted(blob_gets(fault_proxy)) == sorted(ref.path.rsplit("/", 1)[-1] for ref in refs)
    assert cached(cache) == {".arrow": sorted(f"{ref.sha256}.arrow" for ref in refs),
                             ".check": sorted(f"{ref.sha256}.check" for ref in refs), "other": []}

    fault_proxy.clear()
    with s3_feed.consumer(storage_options=options, cache_dir=cache) as restarted:
        assert view_state(restarted.view()) == s3_feed.states[2]
        assert restarted.status()["last_load"] == "snapshot 1 + 1 delta (0 bytes fetched)"
    assert blob_gets(fault_proxy) == []  # manifests and the announcement only
    assert fault_proxy.count("GET") > 0


@pytest.mark.s3
def test_damaged_cache_files_are_detected_and_fetched_again(
    s3_feed: Feed, s3_server: S3Server, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    options = s3_server.storage_options(fault_proxy.url)
    s3_feed.consumer(storage_options=options, cache_dir=cache).close()
    snapshot = s3_feed.dataset.manifest(1).snapshot
    delta = s3_feed.dataset.manifest(2).delta
    assert snapshot is not None and delta is not None
    snapshot_file, delta_file = file_of(cache, snapshot), file_of(cache, delta)
    whole = {path: path.read_bytes() for path in (snapshot_file, delta_file)}

    # A byte flipped in the data region: inside a title, where only hashing the whole file notices (every open does).
    data = bytearray(whole[snapshot_file])
    at = data.index(b"Movie 150")
    data[at + 6] ^= 0x01  # "Movie 150" -> "Movie 050"
    snapshot_file.write_bytes(bytes(data))
    # And a delta file cut short, as a write torn by a crash would leave it.
    delta_file.write_bytes(whole[delta_file][: len(whole[delta_file]) // 2])

    fault_proxy.clear()
    with s3_feed.consumer(storage_options=options, cache_dir=cache) as restarted:
        assert restarted.get("m150") == {"key": "m150", "title": "Movie 150", "year": 1990}
        assert view_state(restarted.view()) == s3_feed.states[2]
    assert sorted(blob_gets(fault_proxy)) == sorted([snapshot.path.rsplit("/", 1)[-1], delta.path.rsplit("/", 1)[-1]])
    assert {path: path.read_bytes() for path in whole} == whole  # both rewritten whole

    # An emptied file (what a power loss can leave under the final name) is refetched too.
    delta_file.write_bytes(b"")
    fault_proxy.clear()
    with s3_feed.consumer(storage_options=options, cache_dir=cache) as restarted:
        assert view_state(restarted.view()) == s3_feed.states[2]
    assert blob_gets(fault_proxy) == [delta.path.rsplit("/", 1)[-1]]
    # A file without its record is not trusted either.
    (cache / f"{delta.sha256}.check").unlink()
    fault_proxy.clear()
    s3_feed.consumer(storage_options=options, cache_dir=cache).close()
    assert blob_gets(fault_proxy) == [delta.path.rsplit("/", 1)[-1]]


LOADER = r"""
import json, sys, time
from pathlib import Path
from combe.consumer import Consumer

store, dataset, cache, barrier, me = sys.argv[1:6]
Path(barrier, me).touch()
deadline = time.monotonic() + 30
while len(list(Path(barrier).iterdir())) < 4 and time.monotonic() < deadline:
    time.sleep(0.001)
consumer = Consumer(store, dataset, cache_dir=cache)
print(json.dumps({"version": consumer.version, "rows": consumer.view().table.to_pylist()}, default=str))
"""


@pytest.mark.slow  # four interpreters loading at once
def test_four_processes_loading_into_one_cache_dir_at_once(tmp_path: Path) -> None:
    feed = Feed(tmp_path, snapshot_ratio=1e9)
    feed.publish(movies(3000))
    feed.publish([("m001", None), ("m3000", {"title": "Movie 3000", "year": 2024})])
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    loaders = [subprocess.Popen([sys.executable, "-c", LOADER, feed.store, DATASET, str(cache), str(barrier), str(i)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    outputs = [loader.communicate(timeout=120) for loader in loaders]
    assert [loader.returncode for loader in loaders] == [0] * 4, [err for _, err in outputs]
    with feed.consumer() as reference:
        expected = json.loads(json.dumps({"version": 2, "rows": reference.view().table.to_pylist()}, default=str))
    assert all(json.loads(out) == expected for out, _ in outputs)

    refs = [feed.dataset.manifest(1).snapshot, feed.dataset.manifest(2).delta]
    assert cached(cache) == {".arrow": sorted(f"{r.sha256}.arrow" for r in refs if r),
                             ".check": sorted(f"{r.sha256}.check" for r in refs if r), "other": []}
    # Every file is whole: with the blobs gone from the store, a consumer (which checks each file whole) loads
    # from the cache alone.
    for info in feed.dataset.store.list("blobs/"):
        feed.dataset.store.delete(info.path)
    with feed.consumer(cache_dir=cache) as verified:
        assert view_state(verified.view()) == feed.states[2]


def test_a_bounded_cache_keeps_the_files_of_views_in_use(tmp_path: Path) -> None:
    """Over its bound, the cache removes every file no live View needs, and none that one does."""
    feed = Feed(tmp_path, snapshot_every=2)  # snapshots at versions 1, 3, ...
    feed.publish(movies(500))
    cache = tmp_path / "cache"
    with feed.consumer(cache_dir=cache, cache_max_bytes=0, max_deltas=1) as consumer:
        snapshot_1 = file_of(cache, feed.dataset.manifest(1).snapshot)
        assert cached(cache)[".arrow"] == [snapshot_1.name]  # over the bound, but in use

        feed.publish([("m001", {"title": "One", "year": 2001})])
        assert consumer.refresh()
        delta_2 = file_of(cache, feed.dataset.manifest(2).delta)
        assert sorted(cached(cache)[".arrow"]) == sorted([snapshot_1.name, delta_2.name])

        held = consumer.view()  # a reader still holding version 2
        feed.publish([("m001", {"title": "Uno", "year": 2001}), ("m002", None)])
        assert consumer.refresh()
        assert consumer.last_plan is not None and consumer.last_plan.startswith("snapshot 3")  # max_deltas=1
        snapshot_3 = file_of(cache, feed.dataset.manifest(3).snapshot)
        assert sorted(cached(cache)[".arrow"]) == sorted([snapshot_1.name, delta_2.name, snapshot_3.name])
        assert held.get("m001") == {"key": "m001", "title": "One", "year": 2001}

        del held
        gc.collect()
        feed.publish([("m004", None)])
        assert consumer.refresh()
        delta_4 = file_of(cache, feed.dataset.manifest(4).delta)
        # Version 4 is snapshot 3 + delta 4; the files of versions 1 and 2 went with the last View using them.
        assert sorted(cached(cache)[".arrow"]) == sorted([snapshot_3.name, delta_4.name])
        assert sorted(cached(cache)[".check"]) == sorted(p.replace(".arrow", ".check")
                                                         for p in (snapshot_3.name, delta_4.name))
        assert view_state(consumer.view()) == feed.states[4]


def test_a_bounded_cache_evicts_the_least_recently_used_first(tmp_path: Path) -> None:
    """Three datasets share a cache that holds two snapshots: the one used longest ago goes."""
    feeds = {name: Feed(tmp_path, name=name) for name in ("old", "recent", "new")}
    for name, feed in feeds.items():
        feed.publish(movies(400, tag=f" ({name})"))
    cache = tmp_path / "cache"
    files = {}
    for name in ("old", "recent"):
        feeds[name].consumer(cache_dir=cache).close()
        files[name] = file_of(cache, feeds[name].dataset.manifest(1).snapshot)
    now = time.time()
    os.utime(files["old"], (now - 600, now - 600))
    os.utime(files["recent"], (now - 60, now - 60))
    files["new"] = file_of(cache, feeds["new"].dataset.manifest(1).snapshot)

    bound = files["recent"].stat().st_size * 2 + 1024  # the snapshots are about the same size
    with feeds["new"].consumer(cache_dir=cache, cache_max_bytes=bound) as consumer:
        assert sorted(cached(cache)[".arrow"]) == sorted([files["recent"].name, files["new"].name])
        assert view_state(consumer.view()) == feeds["new"].states[1]
    # Reading a file counts as using it: "recent", used before "new" and then opened again, makes "new" the
    # least recently used. The times are set, not waited for: file times may be coarser than a test's steps.
    now = time.time()
    os.utime(files["recent"], (now - 60, now - 60))
    os.utime(files["new"], (now - 30, now - 30))
    feeds["recent"].consumer(cache_dir=cache).close()
    with feeds["old"].consumer(cache_dir=cache, cache_max_bytes=bound):
        assert sorted(cached(cache)[".arrow"]) == sorted([files["old"].name, files["recent"].name])


def test_evicting_a_file_another_consumer_maps_leaves_that_consumer_reading(tmp_path: Path) -> None:
    """Eviction unlinks; on Linux a mapping outlives the file's name, so the mapper reads on."""
    feeds = {name: Feed(tmp_path, name=name) for name in ("mapped", "other")}
    for name, feed in feeds.items():
        feed.publish(movies(400, tag=f" ({name})"))
    cache = tmp_path / "cache"
    with feeds["mapped"].consumer(cache_dir=cache) as mapper:
        mapped = file_of(cache, feeds["mapped"].dataset.manifest(1).snapshot)
        with feeds["other"].consumer(cache_dir=cache, cache_max_bytes=0):
            assert not mapped.exists()
        assert view_state(mapper.view()) == feeds["mapped"].states[1]
        assert mapper.get("m399") == {"key": "m399", "title": "Movie 399 (mapped)", "year": 1999}


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish(movies(10))
    cache = tmp_path / "cache"
    cache.mkdir()
    stale, fresh = cache / ".incoming-killed", cache / ".incoming-writing"
    for path in (stale, fresh):
        path.write_bytes(b"half a file")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    feed.consumer(cache_dir=cache).close()
    assert not stale.exists() and fresh.exists()  # another process may still be writing the fresh one


def test_cache_options_need_a_cache_dir(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish(movies(10))
    with pytest.raises(ConfigError, match="give cache_dir too"):
        feed.consumer(cache_max_bytes=10**9)
    with pytest.raises(ConfigError, match="cache_max_bytes=-1"):
        feed.consumer(cache_dir=tmp_path / "cache", cache_max_bytes=-1)


def test_the_replay_matches_what_the_cached_consumer_serves(tmp_path: Path) -> None:
    """A cached consumer following a dataset through many versions serves each exactly."""
    feed = Feed(tmp_path, snapshot_every=3)
    changes = movies(100)
    feed.publish(changes)
    with feed.consumer(cache_dir=tmp_path / "cache", cache_max_bytes=1) as consumer:
        for version in range(2, 9):
            step: list[Change] = [(f"m{version:03d}", None), (f"n{version}", {"title": f"New {version}", "year": 2000})]
            changes += step
            feed.publish(step)
            assert consumer.refresh()
            assert view_state(consumer.view()) == replay(changes) == feed.states[version]


# Flips one random bit in one file of a copy of a filled cache directory, then loads through it and reads
# every record, trial after trial; a line before each load names the flip, so a crash says which one.
BIT_FLIPS = r"""
import json, random, shutil, sys
from pathlib import Path
from combe.consumer import Consumer

store, dataset, pristine, work, seed, trials = sys.argv[1:7]
rng = random.Random(int(seed))
names = sorted(p.name for p in Path(pristine).iterdir())
for trial in range(int(trials)):
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(pristine, work)
    target = Path(work, rng.choice(names))
    data = bytearray(target.read_bytes())
    bit = rng.randrange(len(data) * 8)
    data[bit // 8] ^= 1 << (bit % 8)
    target.write_bytes(bytes(data))
    print(json.dumps({"flip": [target.name, bit]}), flush=True)
    with Consumer(store, dataset, cache_dir=work) as consumer:
        view = consumer.view()
        keys = view.table.column("key").to_pylist()
        served = {"rows": view.table.to_pylist(), "gets": [view.get(k) for k in keys], "many": view.get_many(keys)}
    whole = all(Path(work, name).read_bytes() == Path(pristine, name).read_bytes() for name in names)
    print(json.dumps({"served": served, "whole": whole}), flush=True)
"""


def test_a_flipped_bit_anywhere_in_the_cache_is_never_served_and_never_crashes(tmp_path: Path) -> None:
    """Property-style, with fixed seeds: every trial flips one bit at a random place in one cached file."""
    feed = Feed(tmp_path, snapshot_ratio=1e9)
    feed.publish(movies(300))
    feed.publish([("m001", {"title": "Movie 1 (remastered)", "year": 2001}), ("m002", None),
                  ("m300", {"title": "Movie 300", "year": 2020})])
    pristine = tmp_path / "pristine"
    with feed.consumer(cache_dir=pristine) as reference:
        view = reference.view()
        keys = view.table.column("key").to_pylist()
        expected = json.loads(json.dumps({"rows": view.table.to_pylist(), "gets": [view.get(k) for k in keys],
                                          "many": view.get_many(keys)}))
    assert sorted(cached(pristine)) == [".arrow", ".check", "other"] and len(cached(pristine)[".arrow"]) == 2

    trials = examples(120)  # a tenth under make check's hypothesis profile, like the property tests
    run = subprocess.run([sys.executable, "-c", BIT_FLIPS, feed.store, DATASET, str(pristine), str(tmp_path / "work"),
                          "15", str(trials)], capture_output=True, text=True, timeout=600, check=False)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.returncode == 0, f"crashed ({run.returncode}) after {lines[-1:]}: {run.stderr[-2000:]}"
    flips, outcomes = lines[0::2], lines[1::2]
    assert len(outcomes) == trials
    assert {flip["flip"][0].rsplit(".", 1)[1] for flip in flips} == {"arrow", "check"}  # both kinds were hit
    wrong = [flip for flip, outcome in zip(flips, outcomes) if outcome["served"] != expected]
    assert wrong == []  # 0 served: every damaged file was detected and fetched again
    assert all(outcome["whole"] for outcome in outcomes)  # ...and rewritten whole
