"""bench/diff.py runs end to end as a script and reports a row per pair (no thresholds: see bench/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_diff_bench_runs_and_reports_both_ways(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "diff.py"), "--records", "400", "--versions", "6",
                           "--runs", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("400 records, versions 1-6") and "deltas s" in lines[1]
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == ["5-6", "2-6"]
    for row in rows:
        assert int(row[1].replace(",", "")) > 0 and float(row[2]) > 0 and float(row[3]) > 0
        assert row[-1] in ("deltas", "states")
