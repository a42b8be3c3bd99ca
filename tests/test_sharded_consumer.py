"""Consumers of sharded datasets: hold some shards, refresh them as one version, refuse keys outside them."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest

from combe.consumer import Consumer
from combe.consumer.sharded import ShardedView
from combe.format.dataset import Dataset
from combe.format.errors import ConfigError, KeyTypeError, ShardNotHeld
from tests.support.changelog import Change, canon, replay
from tests.support.sharded import ShardedWriter


def movies(count: int, rng: random.Random, prefix: str = "m") -> list[Change]:
    return [(f"{prefix}{i}", {"title": f"t{rng.randrange(10**6)}", "year": 1950 + rng.randrange(70),
                              "genre": rng.choice(["drama", "comedy", "noir"])}) for i in range(count)]


def held_state(consumer: Consumer) -> dict[Any, str]:
    table = consumer.view().table
    return {row["key"]: canon(row) for row in table.to_pylist()}  # type: ignore[misc]


@pytest.fixture
def writer(store: str, tmp_path: Path) -> ShardedWriter:
    return ShardedWriter(store, "movies", 4, tmp_path)


def test_whole_dataset_by_default_and_one_shard_on_request(writer: ShardedWriter, store: str) -> None:
    changes = movies(400, random.Random(1))
    done = writer.publish(changes)
    assert done is not None and done.outcome == "committed" and done.version == 1
    expected = replay(changes)
    with Consumer(store, "movies") as whole:
        assert whole.shards == (0, 1, 2, 3) and whole.shard_count == 4
        assert whole.version == 1 and len(whole) == 400
        assert held_state(whole) == expected
        assert canon(whole.get("m7")) == expected["m7"]
        assert whole.get("absent") is None
    for shard in range(4):
        with Consumer(store, "movies", shards=[shard]) as part:
            mine = {k: v for k, v in expected.items() if writer.shard_of(k) == shard}
            assert held_state(part) == mine and len(part) == len(mine)
            outside = next(k for k in expected if writer.shard_of(k) != shard)
            with pytest.raises(ShardNotHeld, match=f"is in shard {writer.shard_of(outside)}; this consumer holds "
                                                   f"shards {shard} of 4") as caught:
                part.get(outside)
            assert caught.value.shard == writer.shard_of(outside) and caught.value.held == (shard,)
            inside = next(iter(mine))
            assert canon(part.get(inside)) == mine[inside]
            with pytest.raises(ShardNotHeld):
                part.get_many([inside, outside])
            with pytest.raises(ShardNotHeld):
                part.get_table([outside])
            # An absent key of a held shard is a miss, not an error.
            absent = next(f"zz{i}" for i in range(1000) if writer.shard_of(f"zz{i}") == shard)
            assert part.get(absent) is None


def test_batches_span_shards_in_order(writer: ShardedWriter, store: str) -> None:
    changes = movies(300, random.Random(2))
    writer.publish(changes)
    expected = replay(changes)
    rng = random.Random(5)
    keys = [rng.choice(list(expected)) if rng.random() < 0.8 else f"nope{i}" for i in range(200)] + ["m3", "m3"]
    with Consumer(store, "movies", shards=[0, 1, 2, 3]) as whole:
        found = whole.get_many(keys)
        assert [canon(r) for r in found] == [expected.get(k) for k in keys]
        table = whole.get_table(keys)
        assert table.column("key").to_pylist() == [k for k in keys if k in expected]
        assert [canon(r) for r in table.to_pylist()] == [expected[k] for k in keys if k in expected]
        assert whole.get_many([]) == [] and whole.get_table([]).num_rows == 0
        with pytest.raises(KeyTypeError):
            whole.get_many(["m1", 5])
    with Consumer(store, "movies", shards=[2, 0]) as some:
        assert some.shards == (0, 2)
        mine = [k for k in expected if writer.shard_of(k) in (0, 2)]
        assert [canon(r) for r in some.get_many(mine)] == [expected[k] for k in mine]
        assert some.view().table.num_rows == len(mine)


def test_refresh_swaps_every_held_shard_at_once(writer: ShardedWriter, store: str) -> None:
    rng = random.Random(3)
    first = movies(200, rng)
    writer.publish(first)
    with Consumer(store, "movies", shards=[1, 3]) as part:
        seen: list[Any] = []
        part.on_update(seen.append)
        view = part.view()
        assert isinstance(view, ShardedView) and view.version == 1
        # Only shards 1 and 3 change; a new column appears in shard 3 only.
        second: list[Change] = []
        for key, _ in first[:80]:
            if writer.shard_of(key) == 3:
                second.append((key, {"title": "new", "year": 2000, "genre": "noir", "rating": 4.5}))
            elif writer.shard_of(key) == 1:
                second.append((key, None))
        writer.publish(second, shards=[1, 3])
        assert part.refresh() is True and part.version == 2
        expected = {k: v for k, v in replay(first, replay([])).items()}
        expected = replay(second, expected)
        assert held_state(part) == {k: v for k, v in expected.items() if writer.shard_of(k) in (1, 3)}
        # The held view did not change under its holder.
        assert view.version == 1 and held_state_of(view) != held_state(part)
        # Every record has every column of the dataset version, null where its shard has none.
        assert set(part.view().schema.columns) == {"title", "year", "genre", "rating"}
        one = next(k for k, _ in first if writer.shard_of(k) == 1 and k in expected)
        assert part.get(one)["rating"] is None  # type: ignore[index]
        assert len(seen) == 1
        update = seen[0]
        assert (update.from_version, update.to_version) == (1, 2)
        assert update.updated == {k for k, v in second if v is not None}
        assert update.removed == {k for k, v in second if v is None}
        assert not update.added
        # A version that changes only shards this consumer does not hold moves it without a notification of keys.
        writer.publish([(k, {"title": "x"}) for k, _ in first if writer.shard_of(k) == 0], shards=[0])
        assert part.refresh() is True and part.version == 3
        assert len(seen) == 2 and len(seen[1]) == 0
        assert part.status()["shards"][1]["version"] == 2 and part.status()["shard_count"] == 4


def held_state_of(view: Any) -> dict[Any, str]:
    return {row["key"]: canon(row) for row in view.table.to_pylist()}


def test_readers_never_see_a_mix_of_versions(writer: ShardedWriter, store: str) -> None:
    """Every shard of every view a reader gets is at the version the view says, while refreshes run."""
    keys = [f"k{i}" for i in range(200)]
    writer.publish([(k, {"n": 0}) for k in keys])
    stop = threading.Event()
    problems: list[str] = []
    with Consumer(store, "movies") as consumer:
        def read() -> None:
            while not stop.is_set():
                view = consumer.view()
                values = {r["n"] for r in view.get_many(keys)}  # type: ignore[index]
                if values != {view.version - 1}:
                    problems.append(f"version {view.version} has values {values}")
        reader = threading.Thread(target=read)
        reader.start()
        try:
            for n in range(1, 6):
                writer.publish([(k, {"n": n}) for k in keys])
                assert consumer.refresh()
        finally:
            stop.set()
            reader.join()
    assert not problems, problems[:3]


def test_indexes_merge_the_held_shards(writer: ShardedWriter, store: str) -> None:
    changes = movies(500, random.Random(4))
    writer.publish(changes)
    expected = {k: v for k, v in changes}
    with Consumer(store, "movies", shards=[0, 2, 3]) as part:
        held = {k: v for k, v in expected.items() if writer.shard_of(k) in (0, 2, 3)}
        by_genre = part.index("genre")
        drama = sorted(k for k, v in held.items() if v["genre"] == "drama")
        assert [r["key"] for r in by_genre.get("drama")] == drama
        assert [r["key"] for r in by_genre.get("drama", offset=5, limit=7)] == drama[5:12]
        in_range = sorted((v["year"], k) for k, v in held.items() if 1960 <= v["year"] < 1990)
        years = part.index("year")
        assert [(r["year"], r["key"]) for r in years.range(1960, 1990)] == in_range
        assert [(r["year"], r["key"]) for r in years.range(1960, 1990, offset=10, limit=20)] == in_range[10:30]
        # The index follows refreshes.
        first = drama[0]
        writer.publish([(first, {"title": "x", "year": 1975, "genre": "comedy"})])
        part.refresh()
        assert first not in [r["key"] for r in by_genre.get("drama")]


def test_shards_are_checked(writer: ShardedWriter, store: str, tmp_path: Path) -> None:
    writer.publish(movies(50, random.Random(6)))
    for wrong in ([4], [-1], [], ["1"], [True], "0"):
        with pytest.raises(ConfigError, match="shards="):
            Consumer(store, "movies", shards=wrong)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not sharded; leave shards out"):
        from tests.support.changelog import append_jsonl
        from combe.producer.cycle import Publisher
        from combe.producer.sources import open_source
        log = tmp_path / "plain.jsonl"
        append_jsonl(log, [("a", {"x": 1})])
        with open_source(str(log)) as source:
            Publisher(Dataset.open(store, "plain"), source).run_cycle()
        Consumer(store, "plain", shards=[0])
    with Consumer(store, "movies", shards=[1]) as part:
        with pytest.raises(ConfigError, match="sharded"):
            part.history("m1")
        with pytest.raises(ConfigError, match="sharded"):
            part.diff(1)


def test_pins_name_dataset_versions(writer: ShardedWriter, store: str) -> None:
    writer.publish([("a", {"n": 1}), ("b", {"n": 1})])
    writer.publish([("a", {"n": 2}), ("b", {"n": 2})])
    dataset = Dataset.open(store, "movies")
    dataset.set_pin(1)
    with Consumer(store, "movies") as consumer:
        assert consumer.version == 1 and consumer.get("a") == {"key": "a", "n": 1}
        consumer.set_pin(2)
        assert consumer.version == 2 and consumer.get("b") == {"key": "b", "n": 2}
        consumer.set_pin(None)
        assert consumer.version == 1


def test_int64_keys_are_sharded_by_their_decimal_text(store: str, tmp_path: Path) -> None:
    writer = ShardedWriter(store, "numbers", 3, tmp_path, key_type="int64")
    changes: list[Change] = [(n, {"v": n * 2}) for n in range(-50, 150)]
    writer.publish(changes)
    with Consumer(store, "numbers", shards=[writer.shard_of(7)]) as part:
        assert part.get(7) == {"key": 7, "v": 14}
        assert part.get("007") == {"key": 7, "v": 14}  # the same key as text, hashed as 7
        outside = next(n for n in range(100) if writer.shard_of(n) != writer.shard_of(7))
        with pytest.raises(ShardNotHeld):
            part.get(outside)
        with pytest.raises(KeyTypeError):
            part.get("seven")
