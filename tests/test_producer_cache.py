"""The producer's --cache-dir: a --once run maps its state from the blobs the previous run left there.

Every run below is a new Publisher, as each ``combe publish --once`` is a new
process: nothing is kept in memory between them.
"""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from combe.format.cache import CHECK, DATA, PIECE, Incoming, _content_hashes
from combe.format.errors import StoreError, ValidationError
from combe.producer import PublishOptions, Publisher, RecordFormat, open_source
from combe.producer.validators import Limits
from tests.support.changelog import Change, append_jsonl, replay
from tests.support.feed import Feed, view_state


def record(i: int) -> dict[str, Any]:
    return {"title": f"Movie {i}", "year": 1900 + i, "tags": [f"t{i % 7}"]}


class Runs:
    """``combe publish --once`` runs of one changelog, each by a fresh Publisher with the cache directory."""

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.feed = Feed(tmp_path)
        self.cache = tmp_path / "cache"
        self.options = options
        self.state: dict[Any, str] = {}

    def once(self, changes: list[Change], **options: Any) -> int:
        append_jsonl(self.feed.path, changes)
        publisher = Publisher(self.feed.dataset, open_source(str(self.feed.path)),
                              PublishOptions(fmt=RecordFormat(), cache_dir=self.cache, **{**self.options, **options}))
        result = publisher.run_cycle()
        assert result.outcome == "published" and result.version is not None, result
        self.state = replay(changes, self.state)
        return result.version

    def cached(self, suffix: str = DATA) -> set[str]:
        return {path.name.removesuffix(suffix) for path in self.cache.glob(f"*{suffix}")}

    def check(self) -> None:
        with self.feed.consumer() as consumer:
            assert view_state(consumer.view()) == self.state


def test_a_once_run_maps_its_state_from_the_cache_not_the_store(tmp_path: Path) -> None:
    runs = Runs(tmp_path, snapshot_every=100)
    runs.once([(f"m{i:03d}", record(i)) for i in range(300)])
    runs.once([("m001", record(1001)), ("m002", None), ("m300", record(300))])
    snapshot = runs.feed.blob_file(1, "snapshot")
    delta = runs.feed.blob_file(2, "delta")
    assert runs.cached() == {runs.feed.dataset.manifest(1).snapshot.sha256,  # type: ignore[union-attr]
                             runs.feed.dataset.manifest(2).delta.sha256}  # type: ignore[union-attr]
    # The state's blobs are gone from the store: a run that still publishes read them from the cache.
    snapshot.rename(tmp_path / "snapshot.away")
    delta.rename(tmp_path / "delta.away")
    assert runs.once([("m003", record(1003)), ("m004", None)]) == 3
    snapshot.parent.joinpath(snapshot.name).write_bytes((tmp_path / "snapshot.away").read_bytes())
    delta.parent.joinpath(delta.name).write_bytes((tmp_path / "delta.away").read_bytes())
    runs.check()
    # Without the cache the same state must come from the store.
    (tmp_path / "snapshot.away").unlink()
    snapshot.unlink()
    with pytest.raises(StoreError, match="snapshot-1"):
        Publisher(runs.feed.dataset, open_source(str(runs.feed.path)), PublishOptions()).run_cycle()


def test_a_damaged_cache_file_is_fetched_again_and_the_state_stays_right(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    runs.once([(f"m{i:03d}", record(i)) for i in range(200)])
    (cached,) = runs.cache.glob(f"*{DATA}")
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0x10
    cached.write_bytes(bytes(data))
    runs.once([("m001", record(501))])
    runs.check()


def test_a_snapshot_not_vouched_for_is_hashed_in_full_and_then_vouched(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    runs.once([(f"m{i:03d}", record(i)) for i in range(50)])
    manifest = runs.feed.dataset.manifest(1)
    (check,) = runs.cache.glob(f"*{CHECK}")
    fields = json.loads(check.read_bytes())
    assert fields["state_checksum"] == manifest.state_checksum  # the writer vouched for the rows it wrote
    fields["state_checksum"] = "h128:" + "0" * 32  # a damaged word: the manifest's checksum decides
    check.write_text(json.dumps(fields))
    runs.once([("m001", None)])
    assert json.loads(check.read_bytes())["state_checksum"] == manifest.state_checksum
    runs.check()


def test_only_the_announced_states_blobs_stay_and_a_refused_version_leaves_none(tmp_path: Path) -> None:
    runs = Runs(tmp_path, snapshot_every=2)
    runs.once([(f"m{i:03d}", record(i)) for i in range(100)])
    runs.once([("m001", record(901))])
    assert runs.once([("m002", record(902))]) == 3  # a snapshot: version 1's blobs are not needed any more
    third = runs.feed.dataset.manifest(3)
    assert third.snapshot is not None
    assert runs.cached() == runs.cached(CHECK) == {third.snapshot.sha256}
    with pytest.raises(ValidationError):
        runs.once([(f"m{i:03d}", None) for i in range(60)], limits=Limits(max_removed=0.1))
    assert runs.cached() == {third.snapshot.sha256}
    assert not [path for path in runs.cache.iterdir() if path.name.startswith(".")]


def test_a_cache_file_is_written_and_hashed_as_it_came_by_its_own_thread(tmp_path: Path) -> None:
    """What ``write`` queued is on disk in order, hashed piece by piece as a whole file is, once closed; the
    views it was given (bytes and Arrow buffers, as an IPC writer hands them) are all it needs."""

    parts = [b"head", pa.py_buffer(os.urandom(PIECE + 5)), memoryview(b"x" * 1000), pa.py_buffer(b"")]
    whole = b"".join(bytes(memoryview(part)) for part in parts)
    incoming = Incoming(tmp_path)
    for part in parts:
        incoming.write(memoryview(part))
    assert incoming.close()
    assert incoming.path.read_bytes() == whole and incoming.size == len(whole)
    assert incoming.hashes() == _content_hashes(whole)


def test_a_cache_file_that_cannot_be_written_is_dropped_and_never_raised(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:

    class FullDisk(io.RawIOBase):
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    incoming = Incoming(tmp_path)
    incoming._handle.close()
    incoming._handle = FullDisk()  # type: ignore[assignment]
    for _ in range(3):
        incoming.write(b"data")  # queued: the failure is the writing thread's, logged once
    assert not incoming.close()
    assert not incoming.path.exists()
    assert [r.getMessage() for r in caplog.records if "will not be kept" in r.getMessage()] == [
        f"cache file {incoming.path}: [Errno {errno.ENOSPC}] No space left on device; it will not be kept"]
