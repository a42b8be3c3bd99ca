"""combe gc and combe inspect on sharded datasets: gc keeps the shard versions kept dataset versions name, and
every shard version no dataset version names yet; inspect shows the dataset versions and each shard's head."""

from __future__ import annotations

import json
import os
import random
import re
import time
from pathlib import Path

import pytest

from combe.cli import main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.producer import Publisher, PublishOptions, open_source
from combe.producer.validators import Limits
from tests.support.changelog import Change, append_jsonl, canon, replay


def _round(changelog: Path, rng: random.Random, log: list[Change]) -> None:
    changes = [(f"k{rng.randrange(200)}", {"n": rng.randrange(1000)}) for _ in range(300)]
    append_jsonl(changelog, changes)
    log.extend(changes)


def _publish(store: str, changelog: Path, *flags: str) -> int:
    return main(["publish", "--once", "--source", str(changelog), "--store", store, "--dataset", "ds",
                 "--no-max-added", "--no-max-removed", "--snapshot-every", "1", *flags])


def _versions(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in (folder / "versions").glob("*.json"))


def test_gc_keeps_the_shard_versions_of_kept_versions_and_uncommitted_heads(
        store: str, changelog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng, log = random.Random(8), []
    _round(changelog, rng, log)
    assert _publish(store, changelog, "--shard-count", "2") == 0                # version 1: shards 1, 1
    for shard in ("0", "1", "0"):                                               # 2: 2, 1; 3: 2, 2; 4: 3, 2
        _round(changelog, rng, log)
        assert _publish(store, changelog, "--shards", shard) == 0
    _round(changelog, rng, log)
    dataset = Dataset.open(store, "ds")
    options = PublishOptions(limits=Limits(max_added=None, max_removed=None), snapshot_every=1)
    with open_source(str(changelog)) as source:  # shard 1's version 3, at its head, committed by no version
        assert Publisher(dataset.shard(1, 2), source, options).run_cycle().version == 3
    root = Path(store) / "ds"
    assert dataset.sharded_manifest(4).shard_versions == [3, 2]
    leftover = root / "shards" / "0" / "blobs" / ".snapshot-9-x.arrow.zst.abc123.tmp"
    leftover.write_bytes(b"half a blob")
    two_hours_ago = time.time() - 7200
    os.utime(leftover, (two_hours_ago, two_hours_ago))
    capsys.readouterr()

    assert main(["gc", "--store", store, "--dataset", "ds", "--keep-versions", "1", "--grace-hours", "1",
                 "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["kept"], plan["manifests"], plan["shards"]) == ([4], [4], {"0": [3], "1": [2, 3]})
    assert _versions(root) == [4]
    assert _versions(root / "shards" / "0") == [3]
    assert _versions(root / "shards" / "1") == [2, 3]
    assert not leftover.exists()
    with Consumer(store, "ds") as consumer:  # what is kept loads
        assert consumer.version == 4

    assert _publish(store, changelog, "--shard-count", "2") == 0  # the next commit names shard 1's head, which gc kept
    assert dataset.sharded_manifest(5).shard_versions == [4, 3]  # shard 0 folds the last round too
    with Consumer(store, "ds") as consumer:
        assert {row["key"]: canon(row) for row in consumer.view().table.to_pylist()} == replay(log)

    capsys.readouterr()
    assert main(["gc", "--store", store, "--dataset", "ds", "--keep-versions", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete versions/000000000004.json" in out
    assert "would delete shards/1/versions/000000000002.json" in out
    assert "keeps versions 5 (manifests 5 and shard manifests 0: 4; 1: 3 stay)" in out
    assert _versions(root) == [4, 5]


def test_inspect_shows_versions_and_shard_heads(store: str, changelog: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rng, log = random.Random(9), []
    _round(changelog, rng, log)
    assert _publish(store, changelog, "--shard-count", "2", "--tag", "job=7") == 0
    _round(changelog, rng, log)
    assert _publish(store, changelog, "--shards", "1") == 0
    capsys.readouterr()
    assert main(["inspect", "--store", store, "--dataset", "ds", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["announced"], document["shard_count"]) == (2, 2)
    assert [(row["version"], row["shard_versions"], row["tags"]) for row in document["versions"]] == [
        (1, [1, 1], {"job": "7"}), (2, [1, 2], {})]
    assert [(s["shard"], s["head"], s["served"]) for s in document["shards"]] == [(0, 1, 1), (1, 2, 2)]
    assert sum(s["records"] for s in document["shards"]) == document["versions"][-1]["records"]
    assert document["shards"][0]["source"]["positions"] == {str(changelog): {"0": changelog.stat().st_size - sum(
        len(json.dumps({"key": k, "value": v})) + 1 for k, v in log[300:])}}
    assert [c["name"] for c in document["schema"]] == ["key", "n"]
    assert main(["inspect", "--store", store, "--dataset", "ds"]) == 0
    text = capsys.readouterr().out
    assert "ds at " in text and "(2 shards): announced version 2" in text
    assert re.search(r"^ +2 +\d+  1 2$", text, re.M) and re.search(r"^ +1 +2 +2 +\d+  ", text, re.M)
    assert "job=7" in text
