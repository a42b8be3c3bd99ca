"""The benchmark runs end to end and reports every figure; its data generator is deterministic.

No thresholds here: goals belong to the benchmark's report (bench/README.md),
not to a timed test on a shared CI machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import data
from bench.stats import Figure, percentile, ratio

ROOT = Path(__file__).resolve().parents[1]

REQUIRED = [
    "cold_start_speedup_vs_replay", "cold_start_speedup_vs_parquet", "memory_ratio_dict_over_combe",
    "delta_refresh_fraction_of_full", "fold_fraction_of_raw_consume", "load_time_multiple_of_floor",
    "get_p50_us", "dict_get_p50_us", "get_many_keys_per_s", "dict_get_many_keys_per_s",
    "get_p99_idle_us", "get_p99_during_refresh_us", "snapshot_write_mb_per_s", "bare_write_mb_per_s",
]


@pytest.mark.kafka
def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out),
                           "--tmp", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = json.loads(out.read_text())
    assert results["mode"] == "quick" and results["records"] == 20_000
    for key in REQUIRED:
        value = results[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), key
        figure = results["figures"][key]
        assert figure["runs"] >= 5 and figure["min"] <= figure["median"] <= figure["max"], key
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
