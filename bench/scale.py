"""Scale mode (issue 11): publish 10M and 50M records from a file, a 1% change cycle, a consumer load.

    python bench/run.py --scale                                  # 10M, then 50M records; not run in CI
    python bench/run.py --scale --scale-records 2000000 --memory-cap-gb 12

For each size, in a directory of its own (removed afterwards): write the
8-field changelog and its 1% change file (bench/data.py, the producer
scenario's shape), then three whole processes, each timed and weighed
(wall seconds, peak RSS from wait4):

1. ``combe publish --once`` of the changelog into an empty store;
2. the change file appended, ``combe publish --once`` again (with
   ``--cache-dir`` when the CLI has one);
3. ``Consumer(store, dataset)`` loading the new version in a fresh process
   (``python -m bench.scenarios.memory combe``), which also reports the
   state's Arrow bytes.

A step may not fit the machine: each runs under a memory cap (by default the
smaller of 85% of the machine's memory and what is available at the start
less 1 GiB) and is killed when its resident set passes it, and the steps
after it are skipped; the report says which step stopped and why. A step
that fails on its own (an error, a signal) is reported the same way and
makes the exit status 1. Figures are single runs, so they carry the size in
their names (``first_publish_s_10m``); ``steps`` in the JSON has every step.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import data, processes
from .publish_runs import DATASET, INTERPRETER, expect, has_cache_dir, publish
from .stats import Figure

log = logging.getLogger("bench.scale")

SIZES = (10_000_000, 50_000_000)
# Disk a size needs, a record: the changelog (about 210 B), the store's blobs and a producer cache.
DISK_BYTES_PER_RECORD = 600
MB = 1e6


@dataclass
class StepReport:
    """One step of one size, for the JSON and the table."""

    records: int
    step: str
    status: str  # ok, killed, failed, skipped
    seconds: float | None = None
    peak_rss_mb: float | None = None
    detail: str = ""


def label(records: int) -> str:
    return f"{records / 1e6:g}m" if records % 100_000 == 0 else str(records)


STEPS = ("first publish", "1% change cycle", "consumer load")


def _report(records: int, name: str, step: processes.Step) -> StepReport:
    status = "ok" if step.ok else "killed" if step.killed else "failed"
    return StepReport(records, name, status, round(step.seconds, 2), round(step.peak_rss / MB, 1), step.failure())


def _steps(records: int, directory: Path, cap_bytes: int,
           reports: list[StepReport]) -> tuple[data.ChangePlan, list[processes.Step]]:
    """Generate the files, then run the steps in order until one does not finish; each is reported."""
    changelog, change_file = directory / "changelog.jsonl", directory / "changes.jsonl"
    store, cache = directory / "store", directory / "producer-cache"
    started = time.perf_counter()
    size = data.write_products(changelog, records)
    plan = data.write_product_changes(change_file, records)
    reports.append(StepReport(records, "generate", "ok", round(time.perf_counter() - started, 2),
                              detail=f"{size / 1e9:.2f} GB changelog, {len(plan):,} changes"))
    log.info("%s records: %.2f GB written; first publish", f"{records:,}", size / 1e9)
    done: list[processes.Step] = []
    first, summary = publish(changelog, store, cache, cap_bytes=cap_bytes)
    reports.append(_report(records, STEPS[0], first))
    if not first.ok:
        return plan, done
    expect(summary, version=1, added=records)
    done.append(first)
    log.info("first publish %.0f s; the 1%% change cycle", first.seconds)
    with open(changelog, "ab") as handle, open(change_file, "rb") as changes:
        shutil.copyfileobj(changes, handle)
    cycle, summary = publish(changelog, store, cache, cap_bytes=cap_bytes)
    reports.append(_report(records, STEPS[1], cycle))
    if not cycle.ok:
        return plan, done
    expect(summary, version=2, added=len(plan.added), updated=len(plan.updated), removed=len(plan.removed))
    done.append(cycle)
    log.info("change cycle %.1f s; loading a consumer", cycle.seconds)
    load = processes.run([sys.executable, "-m", "bench.scenarios.memory", "combe", str(store), DATASET],
                         cap_bytes=cap_bytes)
    reports.append(_report(records, STEPS[2], load))
    if load.ok:
        done.append(load)
    return plan, done


def run_size(records: int, root: Path, cap_bytes: int, interpreter_rss: int) -> tuple[list[StepReport], list[Figure]]:
    """Every step for one size, and the figures of those that finished."""
    free = shutil.disk_usage(root).free
    if free < records * DISK_BYTES_PER_RECORD:
        needs = records * DISK_BYTES_PER_RECORD
        return [StepReport(records, "generate", "skipped",
                           detail=f"{free / 1e9:.0f} GB free on {root}, needs about {needs / 1e9:.0f}")], []
    directory = root / f"scale-{label(records)}"
    directory.mkdir()
    reports: list[StepReport] = []
    try:
        plan, done = _steps(records, directory, cap_bytes, reports)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if len(done) < len(STEPS):
        stopped = STEPS[len(done)]
        reports += [StepReport(records, name, "skipped", detail=f"the {stopped} did not finish")
                    for name in STEPS[len(done) + 1:]]
    return reports, figures(records, plan, done, interpreter_rss)


def figures(records: int, plan: data.ChangePlan, done: list[processes.Step], interpreter_rss: int) -> list[Figure]:
    """The figures of the steps that finished (``done``, the first of STEPS); ratios need both their sides."""
    suffix, at = label(records), f"{records:,} records"
    out: list[Figure] = []
    if not done:
        return out
    first = done[0]
    out += [Figure(f"first_publish_s_{suffix}", "s", [first.seconds], f"combe publish --once, whole process, {at}"),
            Figure(f"first_publish_peak_rss_mb_{suffix}", "MB", [first.peak_rss / MB])]
    if len(done) >= 2:
        cycle = done[1]
        out += [Figure(f"delta_cycle_s_{suffix}", "s", [cycle.seconds], f"1% change cycle ({len(plan):,} changes)"),
                Figure(f"delta_cycle_peak_rss_mb_{suffix}", "MB", [cycle.peak_rss / MB]),
                Figure(f"delta_cycle_fraction_of_first_publish_{suffix}", "x", [cycle.seconds / first.seconds],
                       "change cycle / first publish", ("<=", 0.05))]
    if len(done) == 3:
        load = done[2]
        arrow = json.loads(load.stdout.strip().splitlines()[-1])["arrow_bytes"]
        out += [Figure(f"consumer_load_s_{suffix}", "s", [load.seconds], "Consumer() in a fresh process"),
                Figure(f"consumer_load_peak_rss_mb_{suffix}", "MB", [load.peak_rss / MB]),
                Figure(f"state_arrow_mb_{suffix}", "MB", [arrow / MB], "table.nbytes of the published state"),
                Figure(f"producer_peak_rss_multiple_of_arrow_{suffix}", "x",
                       [(first.peak_rss - interpreter_rss) / arrow],
                       "(first publish peak RSS - the interpreter's) / Arrow bytes of the state", ("<=", 2.5)),
                Figure(f"delta_cycle_peak_rss_multiple_of_arrow_{suffix}", "x",
                       [(cycle.peak_rss - interpreter_rss) / arrow],
                       "(change cycle peak RSS - the interpreter's) / Arrow bytes of the state", ("<=", 2.5))]
    return out


def run(sizes: list[int], tmp: Path | None, cap_bytes: int | None) -> tuple[list[Figure], dict[str, Any]]:
    """Every size in turn; the figures and what the document adds for scale mode (steps, cap, errors)."""
    cap = cap_bytes or processes.memory_cap()
    log.info("scale mode: %s records, each step capped at %.1f GiB of RSS%s", " and ".join(f"{s:,}" for s in sizes),
             cap / 2**30, "; the producer keeps a --cache-dir" if has_cache_dir() else "")
    interpreter = processes.run(INTERPRETER).check().peak_rss
    all_figures: list[Figure] = []
    steps: list[StepReport] = []
    root = Path(tempfile.mkdtemp(prefix="combe-scale-", dir=tmp))
    try:
        for records in sizes:
            found, measured = run_size(records, root, cap, interpreter)
            steps += found
            all_figures += measured
    finally:
        shutil.rmtree(root, ignore_errors=True)
    extra: dict[str, Any] = {"sizes": sizes, "memory_cap_bytes": cap, "interpreter_peak_rss_bytes": interpreter,
                             "cache_dir": has_cache_dir(), "steps": [asdict(s) for s in steps]}
    failed = {f"{s.records:,} {s.step}": s.detail for s in steps if s.status == "failed"}
    if failed:
        extra["errors"] = failed
    return all_figures, extra

