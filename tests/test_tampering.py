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
from combe.format.errors import FormatError
from combe.format.types import SCALARS
from tests.support.changelog import append_jsonl
from tests.support.feed import Feed, view_state

DATASET = "movies"
Edit = Callable[[dict[str, Any]], None]


def record(i: int) -> dict[str, Any]:
    return {"title": f"Movie {i}", "year": 1990 + i, "score": i / 4, "tags": [i, "x"], "seen": i % 2 == 0}


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


COLUMNS = {"title": "string", "year": "int64", "score": "float64", "tags": "json", "seen": "bool"}
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
            assert behind.version == 1 and view_state(behind.view()) == served
            assert f"version {version}" in behind.status()["last_error"]

    append_jsonl(feed.path, [("m200", record(200))])
    capsys.readouterr()
    code = main(["publish", "--once", "--source", str(feed.path), "--store", feed.store, "--dataset", DATASET])
    err = capsys.readouterr().err
    assert code == EXIT_FAILURE, err
    assert err.startswith("combe publish: ") and f"version {version}" in err and "Traceback" not in err
    assert Dataset.open(feed.store, DATASET).announced().version == 2 and feed.dataset.versions() == [1, 2]
