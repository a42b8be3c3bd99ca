"""Publishing a sharded dataset: processes holding disjoint shards, each committing its shards' new versions.

File sources here (a file holds every shard's records: each shard's cycle
passes over the others'); the Kafka source, real processes and SIGKILL are
in test_sharded_kafka.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from combe.cli import main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.partition import partition_of
from combe.producer import PublishOptions, RecordFormat, open_source
from combe.producer.sharded import ShardedPublisher, open_sharding
from combe.producer.validators import Limits
from tests.support.changelog import Change, append_jsonl, canon, replay


def changes(count: int, keys: int, rng: random.Random, tombstones: float = 0.1) -> list[Change]:
    return [(f"k{rng.randrange(keys)}", None if rng.random() < tombstones else {"n": rng.randrange(1000), "i": i})
            for i in range(count)]


def whole(store: str, name: str = "ds") -> dict[Any, str]:
    with Consumer(store, name) as consumer:
        return {row["key"]: canon(row) for row in consumer.view().table.to_pylist()}


def publish(store: str, source: Path, *flags: str) -> int:
    return main(["publish", "--once", "--source", str(source), "--store", store, "--dataset", "ds",
                 "--no-max-added", "--no-max-removed", *flags])


def test_processes_with_disjoint_shards_publish_one_dataset(store: str, changelog: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(3)
    rounds = [changes(2000, 500, rng)]
    append_jsonl(changelog, rounds[0])
    assert publish(store, changelog, "--shard-count", "4", "--shards", "0-1") == 0
    assert "shards 2, 3 have no version yet" in capsys.readouterr().out
    dataset = Dataset.open(store, "ds")
    assert dataset.announced().pointer is None  # a version without shards 2 and 3 would miss their keys
    assert publish(store, changelog, "--shard-count", "4", "--shards", "2,3", "--json") == 0
    line = json.loads(capsys.readouterr().out)
    assert (line["outcome"], line["version"], line["commit"]) == ("published", 1, "committed")
    assert sorted(line["shards"]) == ["2", "3"]
    assert whole(store) == replay(rounds[0])
    for shard in range(4):  # each shard holds its keys only, and read the whole file once
        manifest = dataset.shard(shard, 4).manifest(1)
        assert manifest.changes["messages"] == 2000
        rows = Consumer(store, "ds", shards=[shard])
        with rows:
            assert all(partition_of(key, "string", 4) == shard for key in rows.view().table.column("key").to_pylist())

    rounds.append(changes(300, 500, rng))
    append_jsonl(changelog, rounds[1])
    assert publish(store, changelog, "--shards", "0-1") == 0  # the count is in shards.json
    assert dataset.announced().version == 2
    assert dataset.sharded_manifest(2).shard_versions == [2, 2, 1, 1]
    assert publish(store, changelog, "--shard-count", "4", "--shards", "2-3") == 0
    assert dataset.sharded_manifest(3).shard_versions == [2, 2, 2, 2]
    assert whole(store) == replay([c for r in rounds for c in r])
    assert publish(store, changelog, "--shard-count", "4") == 0  # every shard, nothing new
    assert "names every shard's head already" in capsys.readouterr().out.splitlines()[-1]
    assert dataset.announced().version == 3


def test_a_daemon_keeps_each_shard_state_between_cycles(store: str, changelog: Path) -> None:
    rng = random.Random(4)
    rounds = [changes(1000, 300, rng)]
    append_jsonl(changelog, rounds[0])
    dataset = Dataset.open(store, "ds")
    options = PublishOptions(limits=Limits(max_added=None, max_removed=None))
    sharding = open_sharding(dataset, 2, options.fmt, options.producer_id, options.clock)
    with ShardedPublisher(dataset, sharding, [0, 1], lambda i: open_source(str(changelog)), options) as publisher:
        first = publisher.run_cycle()
        assert (first.outcome, first.version, first.commit) == ("published", 1, "committed")
        assert first.messages == 2000  # both shards read the whole file
        for _ in range(2):
            rounds.append(changes(200, 300, rng))
            append_jsonl(changelog, rounds[-1])
            result = publisher.run_cycle()
            assert result.outcome == "published" and result.version == len(rounds)
            # The state a shard announced is the base of its next cycle: not loaded again.
            assert all(p._cached is not None and p._cached.version == len(rounds)
                       for p in publisher.publishers.values())
        assert publisher.run_cycle().outcome == "noop"
    assert whole(store) == replay([c for r in rounds for c in r])


def test_int64_keys_are_sharded_by_their_decimal_text(store: str, changelog: Path) -> None:
    records = [(key, {"n": key}) for key in (-5, 0, 7, 10**12, 2**63 - 1)]
    append_jsonl(changelog, records)
    assert publish(store, changelog, "--shard-count", "3", "--key-type", "int64") == 0
    for shard in range(3):
        with Consumer(store, "ds", shards=[shard]) as part:
            assert sorted(part.view().table.column("key").to_pylist()) == sorted(
                key for key, _ in records if partition_of(key, "int64", 3) == shard)


def test_the_shard_count_and_key_are_fixed_when_the_dataset_is_created(store: str, changelog: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(changelog, changes(50, 20, random.Random(5), tombstones=0))
    assert publish(store, changelog, "--shards", "0") == 2
    assert "is not sharded yet: give its --shard-count to create it" in capsys.readouterr().err
    assert publish(store, changelog, "--shard-count", "2") == 0
    dataset = Dataset.open(store, "ds")
    before = sorted(p.relative_to(store).as_posix() for p in Path(store).rglob("*"))
    assert publish(store, changelog, "--shard-count", "3") == 2
    assert "has 2 shards (shards.json, fixed when it was created); this run asks for 3" in capsys.readouterr().err
    assert publish(store, changelog, "--shard-count", "2", "--shards", "1-2") == 2
    assert "has shards 0 to 1; there is no shard 2" in capsys.readouterr().err
    assert publish(store, changelog, "--shard-count", "2", "--key-type", "int64") == 2
    assert "is keyed by key (string) (shards.json); this run asks for key (int64)" in capsys.readouterr().err
    assert publish(store, changelog) == 2
    assert "is sharded 2 ways: publish its shards, with --shard-count 2" in capsys.readouterr().err
    assert sorted(p.relative_to(store).as_posix() for p in Path(store).rglob("*")) == before
    assert dataset.announced().version == 1


def test_an_unsharded_dataset_takes_no_shards(store: str, changelog: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(changelog, changes(50, 20, random.Random(6), tombstones=0))
    assert publish(store, changelog) == 0
    assert publish(store, changelog, "--shard-count", "2") == 2
    assert "was published unsharded; it cannot take shards" in capsys.readouterr().err
    assert Dataset.open(store, "ds").sharding() is None


def test_bad_shard_lists_are_refused(store: str, changelog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(changelog, changes(10, 5, random.Random(7), tombstones=0))
    assert publish(store, changelog, "--shard-count", "0") == 2
    assert "give a whole number of shards from 1 to 65536" in capsys.readouterr().err
    assert publish(store, changelog, "--shard-count", "2", "--shards", "1-x") == 2
    assert "give shard numbers and ranges" in capsys.readouterr().err
    assert not Path(store, "ds").exists() or Dataset.open(store, "ds").announced().pointer is None


def test_a_value_format_the_shards_disagree_on_is_refused_by_the_commit(store: str, changelog: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Shard 0 published with values as strings, shard 1 as JSON: no dataset version can hold both."""
    append_jsonl(changelog, [(f"k{i}", {"n": i}) for i in range(40)])
    texts = changelog.with_name("texts.jsonl")
    texts.write_text("".join(json.dumps({"key": f"k{i}", "value": f"text {i}"}) + "\n" for i in range(40)))
    dataset = Dataset.open(store, "ds")
    options = PublishOptions(fmt=RecordFormat(value_format="string"))
    sharding = open_sharding(dataset, 2, options.fmt, options.producer_id, options.clock)
    with ShardedPublisher(dataset, sharding, [0], lambda i: open_source(str(texts)), options) as publisher:
        assert publisher.run_cycle().outcome == "pending"
    assert publish(store, changelog, "--shards", "1") == 2
    assert "were published with different value formats" in capsys.readouterr().err
    assert dataset.announced().pointer is None


def test_a_shard_left_without_records_gets_a_first_version_in_the_datasets_columns(store: str,
                                                                                   changelog: Path) -> None:
    """Every record falls in shard 0: shard 1's first version holds no row, in the columns shard 0's records
    brought (its snapshot blob and its manifest agree), and the dataset reads."""
    key = next(f"k{i}" for i in range(100) if partition_of(f"k{i}", "string", 2) == 0)
    append_jsonl(changelog, [(key, {"title": "Alien", "year": 1979})])
    assert publish(store, changelog, "--shard-count", "2") == 0
    assert whole(store) == {key: canon({"key": key, "title": "Alien", "year": 1979})}
    shard = Dataset.open(store, "ds").shard(1, 2)
    assert list(shard.manifest(1).schema.columns) == ["title", "year"] and shard.manifest(1).record_count == 0


def test_shards_that_type_a_column_apart_are_refused_by_the_commit_and_a_declared_schema_agrees(
        store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each shard infers its columns from its own records (a Kafka shard reads its own partitions): shard 0's
    scores all have fractions, shard 1's are whole numbers, so one types the column float64, the other int64.
    The commit refuses, naming the column, both types and the way out; with the schema declared, they agree."""
    keys = {shard: [k for k in (f"k{i}" for i in range(200)) if partition_of(k, "string", 2) == shard][:20]
            for shard in (0, 1)}
    files = {shard: tmp_path / f"shard-{shard}.jsonl" for shard in (0, 1)}
    for shard, path in files.items():
        append_jsonl(path, [(key, {"score": n + (0.5 if shard == 0 else 0)}) for n, key in enumerate(keys[shard])])

    def publish_shard(name: str, shard: int, *flags: str) -> int:
        return main(["publish", "--once", "--source", str(files[shard]), "--store", store, "--dataset", name,
                     "--shard-count", "2", "--shards", str(shard), "--no-max-added", *flags])

    assert publish_shard("inferred", 0) == 0
    capsys.readouterr()
    assert publish_shard("inferred", 1) == 2
    error = capsys.readouterr().err
    assert "column 'score' is float64 in one shard and int64 in another" in error
    assert "Declare one schema for every shard's producer" in error
    assert Dataset.open(store, "inferred").announced().pointer is None

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps([{"name": "key", "type": "string"}, {"name": "score", "type": "float64"}]))
    assert publish_shard("declared", 0, "--schema", str(schema)) == 0
    assert publish_shard("declared", 1, "--schema", str(schema)) == 0
    assert whole(store, "declared") == {key: canon({"key": key, "score": float(n) + (0.5 if shard == 0 else 0)})
                                        for shard in (0, 1) for n, key in enumerate(keys[shard])}
