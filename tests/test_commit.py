"""Committing sharded dataset versions: every shard head named once, by one winner, whoever stopped where."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from combe.format.commit import _next, commit
from combe.format.dataset import Dataset
from combe.format.errors import ConfigError, FormatError
from combe.format.manifest import Pointer, utc_now
from combe.format.sharded import Sharding
from tests.support.changelog import append_jsonl
from tests.support.sharded import ShardedWriter


def keys_of(writer: ShardedWriter, shard: int, count: int) -> list[str]:
    """``count`` keys that belong to ``shard``."""
    return [k for k in (f"k{i}" for i in range(10 * count * writer.count)) if writer.shard_of(k) == shard][:count]


def test_nothing_is_announced_before_every_shard_has_a_version(store: str, tmp_path: Path) -> None:
    writer = ShardedWriter(store, "movies", 3, tmp_path)
    done = writer.publish([(k, {"n": 1}) for k in keys_of(writer, 0, 5)], shards=[0])
    assert done is not None and (done.outcome, done.version, done.pending) == ("pending", None, (1, 2))
    assert writer.dataset.announced().pointer is None
    done = writer.publish([], shards=[1, 2])  # an empty shard still gets its first version
    assert done is not None and (done.outcome, done.version) == ("committed", 1)
    manifest = writer.dataset.sharded_manifest(1)
    assert manifest.shard_versions == [1, 1, 1] and manifest.record_count == 5 and manifest.parent is None
    again = commit(writer.dataset, writer.sharding, producer="tests")
    assert (again.outcome, again.version) == ("current", 1)


def test_a_version_names_each_shard_head_and_keeps_the_others(store: str, tmp_path: Path) -> None:
    writer = ShardedWriter(store, "movies", 2, tmp_path)
    writer.publish([(k, {"n": 1}) for s in (0, 1) for k in keys_of(writer, s, 4)])
    # Shard 1 publishes twice before anyone commits: the next version names its newest head.
    writer.publish([(k, {"n": 2}) for k in keys_of(writer, 1, 4)], shards=[1], commit_after=False)
    done = writer.publish([(k, {"n": 3}) for k in keys_of(writer, 1, 2)], shards=[1], tags={"round": "3"})
    assert done is not None and (done.outcome, done.version) == ("committed", 2)
    manifest = writer.dataset.sharded_manifest(2)
    assert manifest.shard_versions == [1, 3] and manifest.parent == 1 and manifest.tags == {"round": "3"}
    shard1 = writer.dataset.shard(1, 2).manifest(3)
    assert manifest.shards[1].state_checksum == shard1.state_checksum


def test_a_manifest_written_and_not_announced_is_announced_by_the_next_committer(store: str, tmp_path: Path) -> None:
    writer = ShardedWriter(store, "movies", 2, tmp_path)
    writer.publish([(k, {"n": 1}) for s in (0, 1) for k in keys_of(writer, s, 3)])
    writer.publish([(k, {"n": 2}) for k in keys_of(writer, 0, 3)], shards=[0], commit_after=False)
    # A committer that stopped between its create-only manifest and the compare-and-swap of announced.json.
    current = writer.dataset.sharded_manifest(1)
    orphan = _next(writer.dataset, writer.sharding, current, [2, 1], 2, "stopped", {})
    assert writer.dataset.create_sharded_manifest(orphan)
    assert writer.dataset.announced().pointer.version == 1  # type: ignore[union-attr]
    # Meanwhile shard 1 moved on: the next commit announces the orphan first, then a version on top of it.
    done = writer.publish([(k, {"n": 2}) for k in keys_of(writer, 1, 3)], shards=[1])
    assert done is not None and (done.outcome, done.version, done.adopted) == ("committed", 3, (2,))
    assert writer.dataset.sharded_manifest(2).producer == "stopped"
    assert writer.dataset.sharded_manifest(3).shard_versions == [2, 2]
    assert writer.dataset.sharded_manifest(3).parent == 2


def test_committers_racing_lose_no_shard_version(store: str, tmp_path: Path) -> None:
    """Four producers, one shard each, publish and commit at once, round after round (a real local store)."""
    count, rounds = 4, 6
    dataset = Dataset.open(store, "movies")
    sharding = dataset.create_sharding(Sharding("movies", count, "key", "string", utc_now(), "tests"))
    writer = ShardedWriter(store, "movies", count, tmp_path)  # the same sharding, read back
    assert writer.sharding == sharding
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def produce(shard: int) -> None:
        from combe.producer.cycle import Publisher
        from combe.producer.sources import open_source

        log = tmp_path / f"race-{shard}.jsonl"
        keys = keys_of(writer, shard, 3)
        try:
            for n in range(rounds):
                append_jsonl(log, [(k, {"n": n}) for k in keys])
                with open_source(str(log)) as source:
                    Publisher(dataset.shard(shard, count), source).run_cycle()
                start.wait(timeout=60)  # every round, all four commit at the same moment
                commit(dataset, sharding, producer=f"p{shard}")
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=produce, args=(s,)) for s in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    pointer = dataset.announced().pointer
    assert pointer is not None and pointer.shard_count == count
    manifests = [dataset.sharded_manifest(v) for v in range(1, pointer.version + 1)]
    # Versions form one chain, shard versions never go back, and the last names every head.
    assert [m.parent for m in manifests] == [None, *range(1, pointer.version)]
    for before, after in zip(manifests, manifests[1:]):
        assert all(a >= b for a, b in zip(after.shard_versions, before.shard_versions))
        assert after.shard_versions != before.shard_versions
    assert manifests[-1].shard_versions == [rounds] * count
    assert manifests[-1].record_count == 12


def test_an_unsharded_dataset_or_another_shard_count_is_refused(store: str, tmp_path: Path) -> None:
    from combe.producer.cycle import Publisher
    from combe.producer.sources import open_source

    log = tmp_path / "plain.jsonl"
    append_jsonl(log, [("a", {"n": 1})])
    with open_source(str(log)) as source:
        Publisher(Dataset.open(store, "plain"), source).run_cycle()
    plain = Dataset.open(store, "plain")
    sharding = plain.create_sharding(Sharding("plain", 2, "key", "string", utc_now(), "tests"))
    with pytest.raises(ConfigError, match="was published unsharded; it cannot take shards"):
        commit(plain, sharding, producer="tests")
    writer = ShardedWriter(store, "movies", 2, tmp_path)
    writer.publish([("a", {"n": 1})])
    # A dataset's sharding is written once: a second creation with another count gets the first one back.
    assert writer.dataset.create_sharding(Sharding("movies", 5, "key", "string", utc_now(), "x")).shard_count == 2
    wrong = Sharding("movies", 3, "key", "string", utc_now(), "tests")
    with pytest.raises(FormatError, match="announced.json says 2 shards, shards.json 3"):
        commit(writer.dataset, wrong, producer="tests")


def test_a_shard_head_behind_the_announced_version_is_refused(store: str, tmp_path: Path) -> None:
    writer = ShardedWriter(store, "movies", 2, tmp_path)
    writer.publish([("a", {"n": 1}), ("b", {"n": 1})])
    writer.publish([("a", {"n": 2}), ("b", {"n": 2})])
    moved = next(s for s in (0, 1) if writer.dataset.sharded_manifest(2).shard_versions[s] == 2)
    shard = writer.dataset.shard(moved, 2)
    head = shard.announced()
    assert head.pointer is not None
    assert shard.announce(Pointer("movies", 1, utc_now(), "rogue"), head.tag) is not None
    with pytest.raises(FormatError, match=f"the heads of shards \\[{moved}\\] are behind"):
        commit(writer.dataset, writer.sharding, producer="tests")


def test_diff_refuses_a_sharded_dataset_and_changes_nothing(store: str, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """diff reads one chain; inspect and gc know sharded datasets (tests/test_sharded_retention.py)."""
    from combe.cli import main

    writer = ShardedWriter(store, "movies", 2, tmp_path)
    writer.publish([("a", {"n": 1}), ("b", {"n": 1})])
    writer.publish([("a", {"n": 2})])
    before = sorted(p.relative_to(store) for p in Path(store).rglob("*") if p.is_file())
    assert main(["diff", "--store", store, "--dataset", "movies", "1", "2"]) == 1
    assert "is a version of a sharded dataset" in capsys.readouterr().err
    assert main(["inspect", "--store", store, "--dataset", "movies"]) == 0
    assert "(2 shards): announced version 2" in capsys.readouterr().out
    assert sorted(p.relative_to(store) for p in Path(store).rglob("*") if p.is_file()) == before
    assert main(["get", "--store", store, "--dataset", "movies", "a"]) == 0  # a Consumer reads it whole
    assert '"n": 2' in capsys.readouterr().out
