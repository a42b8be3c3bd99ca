"""Retention: ``combe gc`` deletes only what no kept version needs, and kept versions still load."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from combe.cli import EXIT_FAILURE, main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.errors import ConflictError, DatasetNotFound
from combe.format.manifest import Pointer, utc_now
from combe.producer import PublishOptions, Publisher, open_source
from combe.producer.retention import Retention, collect_garbage
from tests.support.changelog import Change, append_jsonl, replay, table_state

DATASET = "movies"
VERSIONS = 50
SNAPSHOT_EVERY = 8  # snapshots at 1, 9, 17, 25, 33, 41, 49
OPTIONS = dict(snapshot_every=SNAPSHOT_EVERY, snapshot_ratio=1000.0)


def publish_cycle(store: str, changelog: Path, **options: Any) -> Any:
    with open_source(str(changelog)) as source:
        return Publisher(Dataset.open(store, DATASET), source, PublishOptions(**{**OPTIONS, **options})).run_cycle()


def build(root: Path, versions: int, **options: Any) -> tuple[str, Path, dict[int, list[Change]]]:
    """A store with ``versions`` versions of small random changes; the changes each version folded through."""
    rng = random.Random(7)
    store, changelog = str(root / "store"), root / "movies.jsonl"
    changelog.touch()
    live: list[str] = []
    history: list[Change] = []
    upto: dict[int, list[Change]] = {}
    for version in range(1, versions + 1):
        changes: list[Change] = []
        for _ in range(30 if version == 1 else 4):
            roll = rng.random()
            if live and roll < 0.2:
                key = live.pop(rng.randrange(len(live)))
                changes.append((key, None))
            elif live and roll < 0.6:
                key = rng.choice(live)
                changes.append((key, {"title": f"{key} v{version}", "score": rng.randint(0, 100)}))
            else:
                key = f"m{len(history):04d}-{version}"
                live.append(key)
                changes.append((key, {"title": key, "score": rng.randint(0, 100)}))
            history.append(changes[-1])
        append_jsonl(changelog, changes)
        assert publish_cycle(store, changelog, **options).version == version
        upto[version] = list(history)
    return store, changelog, upto


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, list[Change]]]:
    root = tmp_path_factory.mktemp("fifty")
    _, _, upto = build(root, VERSIONS)
    return root, upto


@pytest.fixture
def fifty(built: tuple[Path, dict[int, list[Change]]], tmp_path: Path) -> tuple[str, Path, dict[int, list[Change]]]:
    """A private copy of the 50-version store for each test."""
    root, upto = built
    shutil.copytree(root, tmp_path, dirs_exist_ok=True)
    return str(tmp_path / "store"), tmp_path / "movies.jsonl", upto


def files(store: str) -> dict[str, tuple[int, int]]:
    base = Path(store) / DATASET
    return {str(p.relative_to(base)): (p.stat().st_size, p.stat().st_mtime_ns) for p in base.rglob("*") if p.is_file()}


def set_pin(store: str, pin: int | None) -> None:
    dataset = Dataset.open(store, DATASET)
    announced = dataset.announced()
    assert announced.pointer is not None
    pointer = Pointer(DATASET, announced.pointer.version, utc_now(), "test", pin)
    assert dataset.announce(pointer, announced.tag) is not None


def gc(store: str, *flags: str) -> int:
    return main(["gc", "--store", store, "--dataset", DATASET, *flags])


def assert_loads(store: str, version: int, upto: dict[int, list[Change]]) -> None:
    with Consumer(store, DATASET, pin=version) as consumer:
        view = consumer.view()
        assert view.version == version
        assert table_state(view.table, view.schema) == replay(upto[version]), f"version {version}"


def test_gc_keeps_five_versions_that_each_load_with_pin_and_equal_their_replay(
        fifty: tuple[str, Path, dict[int, list[Change]]], capsys: pytest.CaptureFixture[str]) -> None:
    store, changelog, upto = fifty
    set_pin(store, 20)
    announcement = (Path(store) / DATASET / "announced.json").read_bytes()
    assert gc(store, "--keep-versions", "5") == 0
    out = capsys.readouterr().out
    assert "keeps versions 20, 46-50 (manifests 17-20, 41-50 stay)" in out

    dataset = Dataset.open(store, DATASET)
    # 46-48 are built on snapshot 41, 49-50 on snapshot 49, the pin 20 on snapshot 17.
    assert dataset.versions() == [*range(17, 21), *range(41, 51)]
    referenced = {ref.path for v in dataset.versions() for ref in
                  (dataset.manifest(v).snapshot, dataset.manifest(v).delta, dataset.manifest(v).reverse) if ref}
    assert {f"blobs/{p.name}" for p in (Path(store) / DATASET / "blobs").iterdir()} == referenced
    assert (Path(store) / DATASET / "announced.json").read_bytes() == announcement

    for version in [*range(46, 51), 20]:
        assert_loads(store, version, upto)
    for version in (1, 16, 21, 40):
        with pytest.raises(DatasetNotFound, match="removed by gc"):
            Consumer(store, DATASET, pin=version)
    capsys.readouterr()
    assert main(["pin", "--store", store, "--dataset", DATASET, "21"]) == EXIT_FAILURE  # as the README says
    error = capsys.readouterr().err
    assert "no version 21" in error and "removed by gc" in error, error
    # The versions on a kept chain keep their deltas and reverse deltas, so consumers can step along it.
    for version in range(47, 51):
        manifest = dataset.manifest(version)
        assert manifest.delta is not None and manifest.reverse is not None
        assert (Path(store) / DATASET / manifest.reverse.path).exists()
    with Consumer(store, DATASET, pin=50) as consumer:
        consumer.set_pin(46)
        assert table_state(consumer.view().table, consumer.view().schema) == replay(upto[46])

    # Publishing goes on from the kept versions, and a second gc finds nothing more to delete.
    append_jsonl(changelog, [("new", {"title": "after gc", "score": 1})])
    assert publish_cycle(store, changelog).version == 51
    with Consumer(store, DATASET) as consumer:
        assert consumer.version == 20  # the store-wide pin still holds readers
        assert consumer.get("new") is None
    before = files(store)
    assert gc(store, "--keep-versions", "6") == 0
    assert files(store) == before


def test_gc_keeps_each_kept_versions_chain_and_nothing_between(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """What the README says gc keeps, with kept versions 5, 8 and 9 and snapshots at 1 and 7."""
    store, _, upto = build(tmp_path, 9, snapshot_every=6)
    dataset = Dataset.open(store, DATASET)
    assert [v for v in dataset.versions() if dataset.manifest(v).snapshot] == [1, 7]
    blobs = {v: {ref.path for ref in (dataset.manifest(v).snapshot, dataset.manifest(v).delta,
                                      dataset.manifest(v).reverse) if ref} for v in range(1, 10)}
    set_pin(store, 5)
    assert gc(store, "--keep-versions", "2") == 0
    assert "keeps versions 5, 8-9 (manifests 1-5, 7-9 stay)" in capsys.readouterr().out
    assert dataset.versions() == [1, 2, 3, 4, 5, 7, 8, 9]
    present = {f"blobs/{p.name}" for p in (Path(store) / DATASET / "blobs").iterdir()}
    assert present == set().union(*(blobs[v] for v in dataset.versions()))  # version 7's delta 6 -> 7 included
    assert not blobs[6] & present
    for version in (5, 8, 9, 1, 7):
        assert_loads(store, version, upto)


def test_dry_run_deletes_nothing(fifty: tuple[str, Path, dict[int, list[Change]]],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    store, _, _ = fifty
    before = files(store)
    assert gc(store, "--keep-versions", "5", "--dry-run") == 0
    planned = [line for line in capsys.readouterr().out.splitlines() if line.startswith("would delete ")]
    assert files(store) == before
    assert gc(store, "--keep-versions", "5", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert [line.split()[2] for line in planned] == [d["path"] for d in document["deleted"]]
    assert len(document["deleted"]) > 100 and document["kept"] == [46, 47, 48, 49, 50]
    assert sorted(set(before) - set(files(store))) == sorted(d["path"] for d in document["deleted"])


def test_a_consumer_on_a_removed_version_still_moves_to_the_announced_one(
        fifty: tuple[str, Path, dict[int, list[Change]]]) -> None:
    store, _, upto = fifty
    with Consumer(store, DATASET, pin=30) as consumer:
        assert gc(store, "--keep-versions", "5") == 0
        assert consumer.get(consumer.view().table.column("key")[0].as_py()) is not None  # still serving 30
        consumer.set_pin(None)  # the deltas from 30 are gone: it goes through snapshot 49
        assert consumer.version == 50 and consumer.view().base_version == 49
        assert table_state(consumer.view().table, consumer.view().schema) == replay(upto[50])


def test_keep_days_keeps_recent_versions(fifty: tuple[str, Path, dict[int, list[Change]]]) -> None:
    store, _, _ = fifty
    dataset = Dataset.open(store, DATASET)
    recent = collect_garbage(dataset, Retention(1, keep_days=1), dry_run=True)
    assert recent.kept == list(range(1, 51)) and recent.deletions == []
    later = collect_garbage(dataset, Retention(1, keep_days=1), dry_run=True,
                            now=datetime.now(timezone.utc) + timedelta(days=2))
    assert later.kept == [50] and later.manifests == [49, 50]


def test_orphaned_blobs_go_after_the_grace_period(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, changelog, _ = build(tmp_path, 3)
    append_jsonl(changelog, [("m0000-1", None), ("refused", {"title": "x", "score": 1})])

    def refuse(context: object) -> None:
        raise ValueError("no")

    with pytest.raises(Exception, match="no"):
        publish_cycle(store, changelog, validators=[refuse])
    blobs = Path(store) / DATASET / "blobs"
    orphans = sorted(p.name for p in blobs.iterdir() if p.name.startswith(("delta-3-4", "reverse-4-3")))
    assert len(orphans) == 2

    assert gc(store, "--keep-versions", "3", "--grace-hours", "1") == 0
    assert all((blobs / name).exists() for name in orphans)  # young: may belong to a cycle still running
    two_hours_ago = time.time() - 7200
    for name in orphans:
        os.utime(blobs / name, (two_hours_ago, two_hours_ago))
    capsys.readouterr()
    assert gc(store, "--keep-versions", "3", "--grace-hours", "1") == 0
    out = capsys.readouterr().out
    assert not any((blobs / name).exists() for name in orphans)
    assert "referenced by no manifest (a failed or refused cycle), 2.0 h old" in out
    assert Dataset.open(store, DATASET).versions() == [1, 2, 3]


def test_a_version_written_but_not_announced_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, changelog, upto = build(tmp_path, 12)
    append_jsonl(changelog, [("late", {"title": "late", "score": 2})])

    def crash(*args: object) -> None:
        raise KeyboardInterrupt  # the producer dies between the manifest and the announcement

    with monkeypatch.context() as patched:
        patched.setattr(Dataset, "announce", crash)
        with pytest.raises(KeyboardInterrupt):
            publish_cycle(store, changelog)
    assert gc(store, "--keep-versions", "1", "--grace-hours", "0") == 0
    assert Dataset.open(store, DATASET).versions() == [9, 10, 11, 12, 13]
    assert publish_cycle(store, changelog).outcome == "adopted"
    with Consumer(store, DATASET) as consumer:
        assert consumer.version == 13 and consumer.get("late") is not None


def test_gc_stops_if_a_version_it_would_delete_gets_pinned(fifty: tuple[str, Path, dict[int, list[Change]]],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store, _, _ = fifty
    dataset = Dataset.open(store, DATASET)
    listing = dataset.store.list

    def list_then_pin(prefix: str) -> Any:
        found = listing(prefix)
        if prefix.startswith("blobs"):
            set_pin(store, 30)  # an operator pins an old version while gc is planning
        return found

    monkeypatch.setattr(dataset.store, "list", list_then_pin)
    before = files(store)
    with pytest.raises(ConflictError, match="version 30 was pinned or announced while gc was planning"):
        collect_garbage(dataset, Retention(5))
    after = files(store)
    assert {p for p in before if p != "announced.json"} == {p for p in after if p != "announced.json"}


def test_gc_deletes_nothing_on_a_damaged_dataset(fifty: tuple[str, Path, dict[int, list[Change]]],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    store, _, _ = fifty
    (Path(store) / DATASET / "versions" / f"{45:012d}.json").unlink()
    before = files(store)
    assert gc(store, "--keep-versions", "5") == EXIT_FAILURE
    assert "built on version(s) [45], whose manifests are gone" in capsys.readouterr().err
    assert files(store) == before


def test_gc_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gc(str(tmp_path), "--keep-versions", "0") == 2
    assert "keep at least 1 version" in capsys.readouterr().err
    assert gc(str(tmp_path), "--keep-versions", "3") == EXIT_FAILURE  # nothing published there
    assert "has no announced version" in capsys.readouterr().err


# `combe publish` SIGKILLed right after its Nth temporary file is written whole (before the rename or
# link that makes it an object): what a producer killed mid-write really leaves in a local store.
KILLED_MID_WRITE = """
import os, signal, sys
from combe.cli import main

left = int(sys.argv[1])
fsync = os.fsync
def fsync_then_die(fd):
    global left
    fsync(fd)
    left -= 1
    if left == 0:
        os.kill(os.getpid(), signal.SIGKILL)
os.fsync = fsync_then_die
sys.exit(main(sys.argv[2:]))
"""


# Three publish processes SIGKILLed mid-write: make check sees killed cycles recovered in test_cycle.py;
# make test runs this one.
@pytest.mark.slow
def test_gc_removes_the_temporary_files_of_killed_producers_after_the_grace_period(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, changelog, upto = build(tmp_path, 3)
    argv = ["publish", "--once", "--source", str(changelog), "--store", store, "--dataset", DATASET,
            "--snapshot-every", "1"]  # version 4 writes a delta, a reverse delta and a snapshot
    # Version 4's writes in order: delta, reverse, snapshot, manifest, announcement.
    for nth in (1, 4, 5):  # killed in a blob, the manifest and the announcement
        append_jsonl(changelog, [(f"killed-{nth}", {"title": "x", "score": nth})])
        killed = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(nth), *argv],
                                capture_output=True, text=True, timeout=120, check=False)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    root = Path(store) / DATASET
    temporaries = sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp"))
    # One temporary file per killed write, each whole (a blob or document, not an empty file).
    assert sorted(str(Path(t).parent) for t in temporaries) == [".", "blobs", "versions"], temporaries
    assert all((root / t).stat().st_size > 100 for t in temporaries)

    assert gc(store, "--keep-versions", "10", "--grace-hours", "1") == 0
    assert all((root / t).exists() for t in temporaries)  # young: a write may still be going on
    two_hours_ago = time.time() - 7200
    for name in temporaries:
        os.utime(root / name, (two_hours_ago, two_hours_ago))
    capsys.readouterr()
    assert gc(store, "--keep-versions", "10", "--grace-hours", "1") == 0
    out = capsys.readouterr().out
    assert list(root.rglob(".*.tmp")) == []
    assert out.count("temporary file of a write that never finished (a killed process), 2.0 h old") == 3
    assert (root / ".announced.json.lock").exists()  # the lock file is no leftover: it stays

    # Nothing else was touched: the version the last killed run wrote is adopted and loads whole.
    assert main(argv) == 0
    killed = [(f"killed-{nth}", {"title": "x", "score": nth}) for nth in (1, 4, 5)]
    with Consumer(store, DATASET) as consumer:
        assert consumer.version == 4
        assert table_state(consumer.view().table, consumer.view().schema) == replay(upto[3] + killed)
