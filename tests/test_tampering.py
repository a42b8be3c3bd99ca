"""Metadata edited in the store: a manifest whose schema or counts no longer describe its blobs.

Every edit must be a combe error naming the version and what disagrees, in a
new consumer, in a consumer refreshing to the edited version (which keeps
serving the one it has), through the blob cache, and in ``combe publish``
(exit 1, nothing announced): never nulls served under a renamed column, never
a pyarrow or JSON error.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from combe.cli import EXIT_FAILURE, main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.errors import DatasetNotFound, FormatError
from combe.format.types import SCALARS
from tests.support.changelog import Change, append_jsonl, replay
from tests.support.feed import Feed, view_state

DATASET = "movies"
Edit = Callable[[dict[str, Any]], None]


def record(i: int) -> dict[str, Any]:
    return {"title": f"Movie {i}", "year": 1990 + i, "score": i / 4, "tags": [f"t{i}", "x"], "seen": i % 2 == 0}


def _rename(column: int) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        document["schema"][column]["name"] += "_renamed"
    return edit


def _retype(column: int, kind: str) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        document["schema"][column]["type"] = kind
    return edit


def _swap(document: dict[str, Any]) -> None:
    document["schema"][1], document["schema"][2] = document["schema"][2], document["schema"][1]


def _drop(document: dict[str, Any]) -> None:
    del document["schema"][-1]


def _add(document: dict[str, Any]) -> None:
    document["schema"].append({"name": "extra", "type": "string"})


def _count(change: int) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        document["record_count"] += change
    return edit


def _rows(document: dict[str, Any]) -> None:
    for ref in document["blobs"].values():
        if ref is not None:
            ref["rows"] += 1


COLUMNS = {"title": "string", "year": "int64", "score": "float64", "tags": "list<string>", "seen": "bool"}
TYPES = (*SCALARS, "list<int64>", "struct<a:string>", "map<string,int64>")
EDITS: dict[str, Edit] = {
    **{f"rename-{name}": _rename(i + 1) for i, name in enumerate(COLUMNS)},
    **{f"retype-{name}-to-{kind}": _retype(i + 1, kind)
       for i, (name, own) in enumerate(COLUMNS.items()) for kind in TYPES if kind != own},
    "swap-columns": _swap, "drop-column": _drop, "add-column": _add,
    "record-count-up": _count(1), "record-count-down": _count(-1), "blob-rows": _rows,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 (a snapshot) and version 2 (a delta and a reverse delta)."""
    root = tmp_path_factory.mktemp("tampering")
    feed = Feed(root, snapshot_ratio=1e9)
    feed.publish([(f"m{i:03d}", record(i)) for i in range(60)])
    feed.publish([("m001", record(101)), ("m002", None), ("m100", record(100))])
    return root


@pytest.fixture
def feed(built: Path, tmp_path: Path) -> Feed:
    """A private copy of the built store and its changelog."""
    shutil.copytree(built, tmp_path, dirs_exist_ok=True)
    return Feed(tmp_path, snapshot_ratio=1e9)


def edit_manifest(feed: Feed, version: int, edit: Edit) -> None:
    path = Path(feed.store) / DATASET / "versions" / f"{version:012d}.json"
    document = json.loads(path.read_bytes())
    edit(document)
    path.write_text(json.dumps(document))


def assert_names(error: BaseException, version: int) -> None:
    message = str(error)
    assert isinstance(error, FormatError), repr(error)
    assert f"version {version}" in message, message


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("name", sorted(EDITS))
def test_an_edited_manifest_is_a_combe_error_everywhere(feed: Feed, tmp_path: Path, name: str, version: int,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with Consumer(feed.store, DATASET, pin=1) as behind:  # loaded before the edit
        served = view_state(behind.view())
        edit_manifest(feed, version, EDITS[name])

        for options in ({}, {"cache_dir": tmp_path / "cache"}, {"cache_dir": tmp_path / "cache"}):
            with pytest.raises(FormatError) as caught:
                Consumer(feed.store, DATASET, **options)
            assert_names(caught.value, version)

        if version == 2:  # a running consumer refuses to move to it and keeps serving what it has
            with pytest.raises(FormatError) as caught:
                behind.set_pin(None)
            assert_names(caught.value, version)
            assert behind.version == 1 and behind.pin == 1 and view_state(behind.view()) == served

    append_jsonl(feed.path, [("m200", record(200))])
    capsys.readouterr()
    code = main(["publish", "--once", "--source", str(feed.path), "--store", feed.store, "--dataset", DATASET])
    err = capsys.readouterr().err
    assert code == EXIT_FAILURE, err
    assert err.startswith("combe publish: ") and f"version {version}" in err and "Traceback" not in err
    assert Dataset.open(feed.store, DATASET).announced().version == 2 and feed.dataset.versions() == [1, 2]


def test_a_manifest_pointing_at_another_genuine_blob_is_never_built_on(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Every check of the blob alone passes (sha256, columns, rows, the delta fits): only the state checksum
    tells that version 3 now loads version 2's state."""
    feed = Feed(tmp_path, snapshot_ratio=1e9)
    feed.publish([(f"m{i:03d}", record(i)) for i in range(20)])
    feed.publish([("m001", record(101)), ("m003", record(103))])
    feed.publish([("m001", record(201)), ("m003", record(203))])
    version_2 = feed.dataset.manifest(2).to_json()
    edit_manifest(feed, 3, lambda document: document["blobs"].update(delta=json.loads(version_2)["blobs"]["delta"]))

    append_jsonl(feed.path, [("m200", record(200))])
    capsys.readouterr()
    assert publish_cli(feed) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("combe publish: ") and "version 3" in err and "checksum" in err, err
    assert "Traceback" not in err
    assert feed.dataset.announced().version == 3 and feed.dataset.versions() == [1, 2, 3]


# -- announced.json deleted or replaced ---------------------------------------------------------


def publish_cli(feed: Feed, *flags: str) -> int:
    return main(["publish", "--once", "--source", str(feed.path), "--store", feed.store, "--dataset", DATASET,
                 *flags])


def five(tmp_path: Path) -> Feed:
    feed = Feed(tmp_path, snapshot_ratio=1e9, snapshot_every=3)  # snapshots at 1 and 4
    feed.publish([(f"m{i:03d}", record(i)) for i in range(40)])
    for version in range(2, 6):
        feed.publish([(f"m{version:03d}", record(100 + version)), (f"n{version}", record(version))])
    return feed


def test_a_deleted_announcement_is_recovered_and_publishing_goes_on(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    feed = five(tmp_path)
    announced = Path(feed.store) / DATASET / "announced.json"
    with Consumer(feed.store, DATASET) as consumer:
        assert consumer.version == 5
        announced.unlink()
        with pytest.raises(DatasetNotFound):
            consumer.refresh()
        assert consumer.version == 5 and view_state(consumer.view()) == feed.states[5]

        # Nothing new in the source: the run announces version 5 again and says so.
        capsys.readouterr()
        assert publish_cli(feed) == 0
        out = capsys.readouterr().out
        assert out == (f"{DATASET}: announced.json was missing; announced version 5 again (the newest version "
                       "that loads; a store-wide pin, if one was set, is lost)\n")
        assert "announced.json was missing; announced version 5 again" in caplog.text
        assert feed.dataset.announced().version == 5 and feed.dataset.versions() == [1, 2, 3, 4, 5]

        # Deleted again, with changes waiting: recovered, then version 6 is published on top of 5.
        announced.unlink()
        changes: list[Change] = [("m001", None), ("new", record(7))]
        append_jsonl(feed.path, changes)
        assert publish_cli(feed, "--json") == 0
        line = json.loads(capsys.readouterr().out)
        assert (line["outcome"], line["version"], line["recovered"]) == ("published", 6, 5)
        assert consumer.refresh() and consumer.version == 6
        assert view_state(consumer.view()) == replay(changes, feed.states[5])


def test_recovery_skips_a_newest_version_that_does_not_load_and_readers_never_go_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = five(tmp_path)
    with Consumer(feed.store, DATASET) as consumer:
        (Path(feed.store) / DATASET / "announced.json").unlink()
        delta = feed.blob_file(5, "delta")
        delta.write_bytes(delta.read_bytes()[:-1] + bytes([delta.read_bytes()[-1] ^ 1]))

        capsys.readouterr()
        assert publish_cli(feed) == EXIT_FAILURE
        err = capsys.readouterr().err
        assert "version 4 (the newest that loads) is announced again" in err
        assert "version 5:" in err and "sha256" in err and "Repair or remove them" in err
        assert feed.dataset.announced().version == 4

        # The consumer on version 5 never follows the announcement back to 4.
        with pytest.raises(FormatError, match="went back from version 5 to 4"):
            consumer.refresh()
        assert consumer.version == 5 and view_state(consumer.view()) == feed.states[5]
        assert "went back from version 5 to 4" in consumer.status()["last_error"]
        with Consumer(feed.store, DATASET) as fresh:  # a new reader has nothing to go back from
            assert fresh.version == 4 and view_state(fresh.view()) == feed.states[4]


def test_an_old_announcement_put_back_is_not_followed_but_a_pin_is(tmp_path: Path) -> None:
    feed = five(tmp_path)
    announced = Path(feed.store) / DATASET / "announced.json"
    with Consumer(feed.store, DATASET, pin=2) as pinned:
        old = announced.read_bytes()  # version 5's announcement
        feed.publish([("late", record(8))])
        with Consumer(feed.store, DATASET) as consumer:
            assert consumer.version == 6
            announced.write_bytes(old)
            with pytest.raises(FormatError, match="went back from version 6 to 5"):
                consumer.refresh()
            assert consumer.version == 6 and view_state(consumer.view()) == feed.states[6]
            assert pinned.version == 2  # its own pin: it serves 2 whatever is announced

            # The next publish announces version 6 again (written, and no longer announced): the consumer is
            # there already. A rollback is a pin, and a pin is followed back.
            assert publish_cli(feed) == 0 and feed.dataset.announced().version == 6
            assert consumer.refresh() is False and consumer.version == 6
            assert main(["pin", "--store", feed.store, "--dataset", DATASET, "3"]) == 0
            assert consumer.refresh() and consumer.version == 3
            assert view_state(consumer.view()) == feed.states[3]
