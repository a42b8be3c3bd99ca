"""Several processes with one cache_dir share the mapped pages: what 4 processes cost against 1.

The measuring is bench/shared_memory.py's (PSS from /proc/<pid>/smaps_rollup
of workers that hold the dataset); it runs as its own process each time, so
the memory its workers report is theirs alone, and it publishes its own copy
of the dataset into the workspace the first time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..stats import Figure
from ..workspace import Workspace

SCRIPT = Path(__file__).resolve().parents[1] / "shared_memory.py"
PROCESSES = 4


def measure(ws: Workspace) -> dict[str, Any]:
    command = [sys.executable, str(SCRIPT), "--records", str(ws.mode.records), "--processes", str(PROCESSES),
               "--work", str(ws.root / "shared-memory")]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{SCRIPT.name} failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run(ws: Workspace) -> list[Figure]:
    names = {
        "dataset_pss_multiple_of_one": ("x", f"the dataset's share of {PROCESSES} processes' PSS over one's"),
        "pss_total_multiple_of_one": ("x", f"PSS of {PROCESSES} processes, interpreters included, over one's"),
        "one_process_pss_mib": ("MiB", "PSS of one process holding the dataset from the cache dir"),
        "group_pss_total_mib": ("MiB", f"PSS of {PROCESSES} such processes added up"),
    }
    figures = {name: Figure(f"shared_memory_{name}", unit, [], note) for name, (unit, note) in names.items()}
    for _ in range(ws.mode.runs):
        found = measure(ws)
        for name, figure in figures.items():
            figure.values.append(float(found[name]))
    return list(figures.values())
