"""The benchmark runs end to end and reports every figure; its data generator is deterministic.

No thresholds here: goals belong to the benchmark's report (bench/README.md),
not to a timed test on a shared CI machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bench import arrow_delta, data, processes
from bench.stats import Figure, percentile, ratio
from combe.format.partition import partition_of
from tests.support.kafka_broker import KafkaBroker

ROOT = Path(__file__).resolve().parents[1]

REQUIRED = [
    "cold_start_speedup_vs_replay", "cold_start_speedup_vs_parquet", "memory_ratio_dict_over_combe",
    "delta_refresh_fraction_of_full", "load_time_multiple_of_floor",
    "get_p50_us", "dict_get_p50_us", "get_many_keys_per_s", "dict_get_many_keys_per_s",
    "get_p99_idle_us", "get_p99_during_refresh_us", "snapshot_write_mb_per_s", "bare_write_mb_per_s",
    "fold_fraction_of_raw_consume_distinct", "fold_fraction_of_raw_consume_repeated",
    "publish_fraction_of_arrow_json", "publish_speedup_vs_deltalake", "delta_cycle_speedup_vs_deltalake_merge",
    "delta_cycle_fraction_of_first_publish", "producer_peak_rss_multiple_of_arrow", "cache_restart_speedup",
    "declared_schema_publish_multiple_of_inferred", "compound_key_publish_multiple_of_string_key",
    "whole_state_speedup_vs_python_diff",
]

SHARDED = ["sharded_fold_speedup_2_processes", "sharded_fold_speedup_4_processes", "sharded_one_shard_rss_fraction",
           "sharded_one_shard_load_fraction"]


def test_quick_run_writes_every_figure(tmp_path: Path, kafka_broker: KafkaBroker) -> None:
    """Every scenario once (``--runs 1``): the harness end to end, which is what a smoke test is for; the
    median and ratios over several runs are tested below (``test_ratio_is_taken_run_by_run``)."""
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--runs", "1", "--out", str(out),
                           "--tmp", str(tmp_path), "--bootstrap", kafka_broker.bootstrap],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = json.loads(out.read_text())
    assert results["mode"] == "quick" and results["records"] == 20_000 and results["runs"] == 1
    for key in REQUIRED:
        value = results[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), key
        figure = results["figures"][key]
        assert figure["runs"] >= 1 and figure["min"] <= figure["median"] <= figure["max"], key
    for key in SHARDED:  # quick mode folds once per process count (bench/scenarios/sharded.py)
        value = results[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, key
    assert results["machine"]["nproc"] >= 1 and results["machine"]["pyarrow"]
    assert "cold_start_speedup_vs_replay" in done.stdout  # the table


def test_dataset_is_deterministic_with_unique_keys() -> None:
    first = list(data.records(1_000, "string"))
    assert first == list(data.records(1_000, "string"))
    assert len({key for key, _ in first}) == 1_000
    row = first[0][1]
    assert row is not None and len(row) >= 10 and isinstance(row["tags"], list) and isinstance(row["active"], bool)
    assert all(isinstance(key, int) for key, _ in data.records(100, "int64"))


def test_changes_touch_one_percent_with_updates_additions_and_tombstones() -> None:
    existing = {key for key, _ in data.records(10_000, "int64")}
    changes = data.changes(10_000, "int64")
    assert len(changes) == 100 and len({key for key, _ in changes}) == 100
    removed = [key for key, value in changes if value is None]
    added = [key for key, value in changes if key not in existing]
    assert len(removed) == 10 and len(added) == 10 and set(removed) <= existing


def test_changelog_replay_applies_tombstones(tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    data.write_jsonl(path, data.records(200, "string"))
    data.write_jsonl(path, data.changes(200, "string"), append=True)
    state = data.replay_jsonl(path)
    assert len(state) == 200 and all(value is not None for value in state.values())


def test_ratio_is_taken_run_by_run() -> None:
    slow = Figure("slow", "s", [10.0, 20.0, 30.0, 40.0, 50.0])
    fast = Figure("fast", "s", [1.0, 1.0, 2.0, 4.0, 10.0])
    speedup = ratio("speedup", slow, fast, goal=(">=", 10))
    assert speedup.values == [10.0, 20.0, 15.0, 10.0, 5.0]
    assert (speedup.median, speedup.min, speedup.max, speedup.met) == (10.0, 5.0, 20.0, True)
    assert percentile(list(range(101)), 0.99) == 99


def test_product_changelog_has_the_eight_field_shape(tmp_path: Path) -> None:
    path = tmp_path / "products.jsonl"
    size = data.write_products(path, 3_000)
    lines = path.read_bytes().splitlines()
    data.write_products(tmp_path / "again.jsonl", 3_000)
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes()
    assert len(lines) == 3_000 and 150 < size / 3_000 < 260
    records = [json.loads(line) for line in lines]
    assert len({r["key"] for r in records}) == 3_000
    assert {r["key"] for r in records} == {data.key_of(i, "string") for i in range(3_000)}
    types = Counter((name, type(value).__name__) for r in records for name, value in r["value"].items())
    for name, kind in (("name", "str"), ("description", "str"), ("price", "float"), ("quantity", "int"),
                       ("updated_at", "int"), ("active", "bool"), ("tags", "list")):
        assert types[(name, kind)] == 3_000, (name, types)
    unrated = types[("rating", "NoneType")]
    assert 100 < unrated < 500 and types[("rating", "float")] == 3_000 - unrated
    assert all(list(r["value"]) == list(data.PRODUCT_FIELDS) for r in records)
    assert all(isinstance(tag, str) for r in records for tag in r["value"]["tags"])
    assert {len(r["value"]["tags"]) for r in records} == {0, 1, 2, 3}
    int_keys = [json.loads(line)["key"] for line in data.product_lines(np.arange(5), 1, "int64").to_pylist()]
    assert int_keys == [data.key_of(i, "int64") for i in range(5)]


def test_sharded_changelogs_are_the_changelog_split_by_kafka_partitioner(tmp_path: Path) -> None:
    whole = tmp_path / "products.jsonl"
    data.write_products(whole, 3_000)
    paths = [tmp_path / f"shard-{i}.jsonl" for i in range(4)]
    written = data.write_sharded_products(paths, 3_000)
    lines = whole.read_bytes().splitlines(keepends=True)
    shard_of = {line: partition_of(json.loads(line)["key"], "string", 4) for line in lines}
    for shard, (path, (size, count)) in enumerate(zip(paths, written)):
        held = path.read_bytes()
        # Exactly the shard's lines of the unsharded changelog, in its order; the sizes and counts say so.
        assert held.splitlines(keepends=True) == [line for line in lines if shard_of[line] == shard]
        assert (size, count) == (len(held), held.count(b"\n")) and 600 < count < 900
    assert sum(count for _, count in written) == 3_000


def test_product_changes_update_add_and_delete_one_percent(tmp_path: Path) -> None:
    base, changes = tmp_path / "products.jsonl", tmp_path / "changes.jsonl"
    data.write_products(base, 5_000)
    plan = data.write_product_changes(changes, 5_000)
    existing = set(data.replay_jsonl(base))
    found = [json.loads(line) for line in changes.read_bytes().splitlines()]
    removed = {r["key"] for r in found if r["value"] is None}
    updated = {r["key"] for r in found if r["value"] is not None and r["key"] in existing}
    added = {r["key"] for r in found if r["key"] not in existing}
    assert (len(found), len(updated), len(added), len(removed)) == (50, 40, 5, 5) == (
        len(plan), len(plan.updated), len(plan.added), len(plan.removed))
    assert removed <= existing and not added & existing
    assert updated == {data.key_of(i, "string") for i in plan.updated.tolist()}


def test_deltalake_baseline_writes_and_merges_the_replayed_state(tmp_path: Path) -> None:
    """The Delta Lake side ends with what a dict replay of the changelog holds: same keys, same values."""
    base, changes, table = tmp_path / "products.jsonl", tmp_path / "changes.jsonl", tmp_path / "delta"
    data.write_products(base, 2_000)
    plan = data.write_product_changes(changes, 2_000)
    assert arrow_delta.read_json(str(base)) == {"rows": 2_000}
    assert arrow_delta.write(str(base), str(table)) == {"rows": 2_000}
    assert arrow_delta.merge(str(changes), str(table)) == {
        "inserted": len(plan.added), "updated": len(plan.updated), "deleted": len(plan.removed)}
    with open(base, "ab") as handle:
        handle.write(changes.read_bytes())
    expected = data.replay_jsonl(base)
    from deltalake import DeltaTable

    rows = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    assert {row.pop("key"): row for row in rows} == expected


def test_a_step_is_timed_weighed_and_killed_past_its_cap() -> None:
    ballast = b"x" * (200 << 20)  # the harness's own memory must not count as the child's
    small = processes.run([sys.executable, "-c", "pass"]).check()
    assert small.ok and 0 < small.peak_rss < 100 << 20 and small.seconds > 0
    big = processes.run([sys.executable, "-c", "b = b'x' * (300 << 20)"])
    assert big.ok and 300 << 20 < big.peak_rss < 450 << 20
    grows = "b = []\nwhile True: b.append(b'x' * (20 << 20))"
    killed = processes.run([sys.executable, "-c", grows], cap_bytes=150 << 20, timeout=120)
    assert not killed.ok and killed.killed and "passed the cap" in killed.failure()
    assert killed.peak_rss > 150 << 20
    failed = processes.run([sys.executable, "-c", "import sys; sys.exit('no such thing')"])
    assert failed.failure() == "exit status 1: no such thing"
    with pytest.raises(RuntimeError, match="no such thing"):
        failed.check()
    del ballast


@pytest.mark.slow  # two runs of the scale harness, a process for each step
def test_scale_mode_reports_every_step_and_a_step_killed_at_its_cap(tmp_path: Path) -> None:
    run_py = [sys.executable, str(ROOT / "bench" / "run.py"), "--scale", "--scale-records", "5000", "--tmp",
              str(tmp_path)]
    out = tmp_path / "scale.json"
    done = subprocess.run([*run_py, "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = json.loads(out.read_text())
    assert [(s["step"], s["status"]) for s in results["steps"]] == [
        ("generate", "ok"), ("first publish", "ok"), ("1% change cycle", "ok"), ("consumer load", "ok")]
    assert results["first_publish_s_5000"] > 0 and results["producer_peak_rss_multiple_of_arrow_5000"] > 0
    assert results["delta_cycle_fraction_of_first_publish_5000"] > 0 and "consumer load" in done.stdout
    # 40 MiB: less than the interpreter alone, so the first publish is killed and the rest skipped.
    capped = tmp_path / "capped.json"
    done = subprocess.run([*run_py, "--out", str(capped), "--memory-cap-gb", "0.04"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = json.loads(capped.read_text())
    assert [(s["step"], s["status"]) for s in results["steps"]] == [
        ("generate", "ok"), ("first publish", "killed"), ("1% change cycle", "skipped"),
        ("consumer load", "skipped")]
    assert "passed the cap" in results["steps"][1]["detail"] and "first_publish_s_5000" not in results


@pytest.mark.slow  # a process for each step
def test_scale_mode_sharded_run_publishes_and_loads_every_shard(tmp_path: Path) -> None:
    """At 2 shards to keep it short: a changelog per shard, each published, each loaded, the counts checked."""
    sharded = tmp_path / "sharded.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--scale", "--sharded", "--shard-count",
                           "2", "--scale-records", "3000", "--tmp", str(tmp_path), "--out", str(sharded)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = json.loads(sharded.read_text())
    assert results["shard_count"] == 2 and "errors" not in results
    assert [(s["step"], s["status"]) for s in results["steps"]] == [
        ("generate", "ok"), ("publish shard 0", "ok"), ("publish shard 1", "ok"), ("consumer shard 0", "ok"),
        ("consumer shard 1", "ok")]
    shard_records = [int(s["detail"].split()[0].replace(",", "")) for s in results["steps"][1:3]]
    assert sum(shard_records) == 3_000 and all(shard_records)
    assert [s["detail"].split()[0] for s in results["steps"][3:]] == [f"{n:,}" for n in shard_records]
    figures = results["figures"]
    per_shard = figures["sharded_publish_s_per_shard_3000"]["values"]
    assert len(per_shard) == 2 and results["sharded_first_publish_s_3000"] == pytest.approx(sum(per_shard))
    for name in ("sharded_consumer_load_s_per_shard_3000", "sharded_state_arrow_mb_per_shard_3000",
                 "sharded_consumer_load_peak_rss_multiple_of_arrow_3000"):
        assert len(figures[name]["values"]) == 2 and figures[name]["min"] > 0, name
    assert results["sharded_first_publish_peak_rss_mb_3000"] > 0 and results["sharded_disk_mb_3000"] > 0
    assert not list(tmp_path.glob("combe-scale-*")), "the run leaves no files behind"


def test_nested_lookup_bench_runs_and_compares_like_with_like(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "nested.py"), "--records", "2000", "--runs", "1",
                           "--samples", "300", "--work", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    for figure in ("get_p50_us", "tags_only_get_p50_us", "get_many_keys_per_s"):
        for name in ("list", "json"):
            assert results[f"{name}_{figure}"] > 0, figure
        assert results[f"{figure}_list_over_json"] > 0
