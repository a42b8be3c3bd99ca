"""The producer (issue 11): a first publish and a 1% change cycle, against Arrow's JSON reader and Delta Lake.

Every side is a whole process, as a user runs it, on the same file: an
8-field changelog of the mode's record count (bench/data.py's
``write_products``, about 210 bytes a line), then its 1% change file
(updates, additions and tombstones) appended. Each run, in a directory of its
own:

1. ``python -m bench.arrow_delta read-json``: ``pyarrow.json.read_json`` of
   the changelog;
2. ``combe publish --once`` of the changelog into an empty store (the first
   publish: version 1);
3. ``python -m bench.arrow_delta write``: Arrow's JSON reader, then
   ``deltalake.write_deltalake`` of the same rows (key and value fields as
   columns) into a new table;
4. the change file is appended and ``combe publish --once`` runs again: the
   change cycle (version 2; with ``--cache-dir`` when the CLI has one, the
   directory the first publish was given);
5. ``python -m bench.arrow_delta merge``: ``DeltaTable.merge`` of the change
   file into the table of step 3, upserts and deletes in one MERGE;
6. ``python -c "import combe.cli, combe.producer, pyarrow, pyarrow.json"``:
   the interpreter's own peak RSS, taken off the publish's peak.

Every step's counts are checked (versions, added/updated/removed, rows
inserted/updated/deleted), so no side can be fast by doing less. Ratios are
taken run by run. The Arrow size of the state is ``table.nbytes`` of the
published version 1, loaded by a Consumer in its own process.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from .. import data, processes
from ..publish_runs import DATASET, INTERPRETER, expect, has_cache_dir, publish
from ..stats import Figure, ratio
from ..workspace import Workspace
from .memory import probe

MB = 1e6


def baseline(command: str, *paths: Path) -> tuple[processes.Step, dict[str, int]]:
    """One of bench/arrow_delta.py's commands in a new process: the step and its counts."""
    step = processes.run([sys.executable, "-m", "bench.arrow_delta", command, *map(str, paths)]).check()
    counts: dict[str, int] = json.loads(step.stdout.strip().splitlines()[-1])
    return step, counts


def _same(what: str, found: dict[str, int], **expected: int) -> None:
    if {name: found.get(name) for name in expected} != expected:
        raise AssertionError(f"{what}: expected {expected}, got {found}")


def run(ws: Workspace) -> list[Figure]:
    records = ws.mode.records
    root = ws.root / "producer"
    root.mkdir(exist_ok=True)
    base, change_file = root / "products.jsonl", root / "changes.jsonl"
    data.write_products(base, records)
    plan = data.write_product_changes(change_file, records)
    changes = change_file.read_bytes()
    scale = f"{records:,} records"
    at_10m = f"{scale}; the issue's goal is stated at 10M records (bench/run.py --scale)"
    arrow_read = Figure("arrow_json_read_s", "s", [],
                        f"pyarrow.json.read_json of the changelog, whole process, {scale}")
    first = Figure("first_publish_s", "s", [], f"combe publish --once into an empty store, whole process, {scale}")
    delta_write = Figure("deltalake_write_s", "s", [],
                         "pyarrow.json.read_json + deltalake.write_deltalake of the same rows, whole process")
    cycle = Figure("delta_cycle_s", "s", [], f"combe publish --once of the appended 1% change ({len(plan):,} "
                   f"records){', with --cache-dir' if has_cache_dir() else ''}, whole process")
    merge = Figure("deltalake_merge_s", "s", [], "DeltaTable.merge of the change file (upserts and deletes), "
                   "whole process")
    first_rss = Figure("first_publish_peak_rss_mb", "MB", [], "peak RSS of the first publish (ru_maxrss)")
    cycle_rss = Figure("delta_cycle_peak_rss_mb", "MB", [], "peak RSS of the change cycle (ru_maxrss)")
    interpreter = Figure("interpreter_peak_rss_mb", "MB", [], "peak RSS of " + " ".join(INTERPRETER[1:]))
    state_bytes = 0
    for number in range(ws.mode.runs):
        directory = root / f"run-{number}"
        directory.mkdir()
        changelog, store, cache = directory / "changelog.jsonl", directory / "store", directory / "producer-cache"
        shutil.copyfile(base, changelog)
        step, counts = baseline("read-json", changelog)
        _same("read_json", counts, rows=records)
        arrow_read.values.append(step.seconds)
        step, summary = publish(changelog, store, cache)
        step.check()
        expect(summary, version=1, added=records)
        first.values.append(step.seconds)
        first_rss.values.append(step.peak_rss / MB)
        if not state_bytes:
            state_bytes = probe("combe", str(store), DATASET)["arrow_bytes"]
        step, counts = baseline("write", changelog, directory / "delta")
        _same("write_deltalake", counts, rows=records)
        delta_write.values.append(step.seconds)
        with open(changelog, "ab") as handle:
            handle.write(changes)
        step, summary = publish(changelog, store, cache)
        step.check()
        expect(summary, version=2, added=len(plan.added), updated=len(plan.updated),
               removed=len(plan.removed))
        cycle.values.append(step.seconds)
        cycle_rss.values.append(step.peak_rss / MB)
        step, counts = baseline("merge", change_file, directory / "delta")
        _same("DeltaTable.merge", counts, inserted=len(plan.added), updated=len(plan.updated),
              deleted=len(plan.removed))
        merge.values.append(step.seconds)
        interpreter.values.append(processes.run(INTERPRETER).check().peak_rss / MB)
        shutil.rmtree(directory)
    state = Figure("state_arrow_mb", "MB", [state_bytes / MB] * ws.mode.runs, "table.nbytes of the published state")
    publish_rss = Figure(
        "producer_peak_rss_multiple_of_arrow", "x",
        [(peak - own) / state.values[0] for peak, own in zip(first_rss.values, interpreter.values)],
        f"(first publish peak RSS - the interpreter's) / Arrow bytes of the state, {at_10m}", ("<=", 2.5))
    cycle_multiple = Figure(
        "delta_cycle_peak_rss_multiple_of_arrow", "x",
        [(peak - own) / state.values[0] for peak, own in zip(cycle_rss.values, interpreter.values)],
        f"(change cycle peak RSS - the interpreter's) / Arrow bytes of the state, {scale}", ("<=", 2.5))
    return [
        arrow_read, first, delta_write, cycle, merge, first_rss, cycle_rss, interpreter, state,
        ratio("publish_fraction_of_arrow_json", arrow_read, first, goal=(">=", 0.6),
              note="records/s of the first publish / records/s of pyarrow.json.read_json, whole processes"),
        ratio("publish_speedup_vs_deltalake", delta_write, first, goal=(">=", 0.75),
              note="deltalake write (JSON reader included) / combe first publish, whole processes"),
        ratio("delta_cycle_speedup_vs_deltalake_merge", merge, cycle, goal=(">=", 2.0),
              note="DeltaTable.merge of the 1% change / combe's change cycle, whole processes"),
        ratio("delta_cycle_fraction_of_first_publish", cycle, first, goal=("<=", 0.05),
              note=f"change cycle / first publish, {at_10m}"),
        publish_rss, cycle_multiple,
    ]

