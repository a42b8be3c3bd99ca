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

The sharded run (issue 16), 100M records in 4 shards by default:

    python bench/run.py --scale --sharded [--shard-count 4] [--scale-records 100000000]

writes the changelog straight into one file per shard (the partitions of a
topic, bench/data.py ``write_sharded_products``: a key's shard by Kafka's
default partitioner), then, under the same cap, ``combe publish --once
--shard-count K --shards i`` of shard i's file for each shard, one after
another (so the peak is one shard's), and one consumer per shard
(``Consumer(store, dataset, shards=[i])``), each in a fresh process. Every
step is checked: a shard's publish must add every line of its file (a file
source passes over the records of other shards, so a record in the wrong
file would be dropped, and its count short), the last one must commit
dataset version 1 naming all K shards with the generated counts, and each
consumer must hold its shard's records.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import data, processes
from .publish_runs import DATASET, INTERPRETER, expect, has_cache_dir, publish
from .stats import Figure

log = logging.getLogger("bench.scale")

SIZES = (10_000_000, 50_000_000)
SHARDED_SIZES = (100_000_000,)
SHARD_COUNT = 4
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


def _report(records: int, name: str, step: processes.Step, detail: str = "") -> StepReport:
    """A finished step with ``detail``, or one that did not finish with what stopped it."""
    status = "ok" if step.ok else "killed" if step.killed else "failed"
    return StepReport(records, name, status, round(step.seconds, 2), round(step.peak_rss / MB, 1),
                      detail if step.ok else step.failure())


def _memory_probe(store: Path, shard: int | None, cap_bytes: int) -> processes.Step:
    """A consumer loading the announced version (one shard of it, or all) in a fresh process."""
    return processes.run([sys.executable, "-m", "bench.scenarios.memory", "combe", str(store), DATASET,
                          *([] if shard is None else [str(shard)])], cap_bytes=cap_bytes)


def _probed(step: processes.Step) -> dict[str, Any]:
    """The JSON line a memory probe printed last."""
    found: dict[str, Any] = json.loads(step.stdout.strip().splitlines()[-1])
    return found


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
    load = _memory_probe(store, None, cap_bytes)
    reports.append(_report(records, STEPS[2], load))
    if load.ok:
        done.append(load)
    return plan, done


def _short_of_disk(records: int, root: Path) -> StepReport | None:
    """The generate step skipped when ``root``'s disk has too little room for ``records``, else None."""
    free, needs = shutil.disk_usage(root).free, records * DISK_BYTES_PER_RECORD
    if free >= needs:
        return None
    return StepReport(records, "generate", "skipped",
                      detail=f"{free / 1e9:.0f} GB free on {root}, needs about {needs / 1e9:.0f}")


def _skipped(records: int, steps: Sequence[str], finished: int) -> list[StepReport]:
    """The steps after the first one that did not finish (``steps[finished]``), as skipped."""
    if finished >= len(steps):
        return []
    return [StepReport(records, name, "skipped", detail=f"the {steps[finished]} did not finish")
            for name in steps[finished + 1:]]


def run_size(records: int, root: Path, cap_bytes: int, interpreter_rss: int) -> tuple[list[StepReport], list[Figure]]:
    """Every step for one size, and the figures of those that finished."""
    short = _short_of_disk(records, root)
    if short:
        return [short], []
    directory = root / f"scale-{label(records)}"
    directory.mkdir()
    reports: list[StepReport] = []
    try:
        plan, done = _steps(records, directory, cap_bytes, reports)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return reports + _skipped(records, STEPS, len(done)), figures(records, plan, done, interpreter_rss)


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
        arrow = _probed(load)["arrow_bytes"]
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


# -- the sharded run (issue 16) --------------------------------------------------------------------------------


def sharded_steps(shard_count: int) -> tuple[str, ...]:
    """The sharded run's steps after generating: every shard's publish, then every shard's consumer."""
    return (*(f"publish shard {i}" for i in range(shard_count)), *(f"consumer shard {i}" for i in range(shard_count)))


@dataclass
class ShardedRun:
    """What the sharded run's steps left: records per shard, the Arrow bytes each consumer held, disk used."""

    records: list[int]
    arrow_bytes: list[int]
    disk_bytes: int = 0


def _disk_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def _check_committed(store: Path, counts: list[int]) -> None:
    """Fail unless the announced dataset version is version 1 and names every shard with its generated count."""
    from combe.format.dataset import Dataset

    dataset = Dataset.open(str(store), DATASET)
    pointer = dataset.announced().pointer
    if pointer is None or pointer.version != 1 or pointer.shard_count != len(counts):
        raise AssertionError(f"expected dataset version 1 of {len(counts)} shards announced, got {pointer}")
    manifest = dataset.sharded_manifest(pointer.version)
    found = [shard.record_count for shard in manifest.shards]
    if found != counts or manifest.record_count != sum(counts):
        raise AssertionError(f"dataset version 1 holds {found} records a shard ({manifest.record_count} in all), "
                             f"{counts} were generated")


def _sharded_steps(records: int, shard_count: int, directory: Path, cap_bytes: int,
                   reports: list[StepReport]) -> tuple[ShardedRun, list[processes.Step]]:
    """Generate a changelog per shard, publish the shards one after another, then load a consumer per shard;
    each step reported, the steps that finished returned in order (until one did not)."""
    store, cache = directory / "store", directory / "producer-cache"
    changelogs = [directory / f"shard-{i}.jsonl" for i in range(shard_count)]
    started = time.perf_counter()
    written = data.write_sharded_products(changelogs, records)
    counts = [count for _, count in written]
    size = sum(size for size, _ in written)
    reports.append(StepReport(records, "generate", "ok", round(time.perf_counter() - started, 2),
                              detail=f"{size / 1e9:.2f} GB in {shard_count} changelogs, "
                                     f"{min(counts):,} to {max(counts):,} records each"))
    result = ShardedRun(counts, [])
    names = sharded_steps(shard_count)
    done: list[processes.Step] = []
    for shard, changelog in enumerate(changelogs):
        log.info("%s records: publishing shard %d of %d (%s records)", f"{records:,}", shard, shard_count,
                 f"{counts[shard]:,}")
        step, summary = publish(changelog, store, cache, cap_bytes=cap_bytes,
                                options=["--shard-count", str(shard_count), "--shards", str(shard)])
        reports.append(_report(records, names[shard], step, f"{counts[shard]:,} records"))
        if not step.ok:
            return result, done
        # Every line of the shard's file is the shard's: a record another shard's key had (passed over by a
        # file source) would leave ``added`` short of ``messages``.
        last = shard == shard_count - 1
        expect(summary, outcome="published" if last else "pending", messages=counts[shard], added=counts[shard],
               bad_records=0, **({"version": 1} if last else {}))
        done.append(step)
    _check_committed(store, counts)
    result.disk_bytes = _disk_bytes(directory)
    for shard in range(shard_count):
        log.info("loading a consumer of shard %d", shard)
        step = _memory_probe(store, shard, cap_bytes)
        if not step.ok:
            reports.append(_report(records, names[shard_count + shard], step))
            return result, done
        probed = _probed(step)
        if probed["records"] != counts[shard]:
            raise AssertionError(f"the consumer of shard {shard} holds {probed['records']:,} records, "
                                 f"not {counts[shard]:,}")
        reports.append(_report(records, names[shard_count + shard], step,
                               f"{probed['records']:,} records, {probed['arrow_bytes'] / MB:,.0f} MB of Arrow"))
        result.arrow_bytes.append(probed["arrow_bytes"])
        done.append(step)
    return result, done


def run_sharded_size(records: int, shard_count: int, root: Path, cap_bytes: int,
                     interpreter_rss: int) -> tuple[list[StepReport], list[Figure]]:
    """The sharded run at one size, and the figures of the steps that finished."""
    short = _short_of_disk(records, root)
    if short:
        return [short], []
    directory = root / f"sharded-{label(records)}"
    directory.mkdir()
    reports: list[StepReport] = []
    try:
        result, done = _sharded_steps(records, shard_count, directory, cap_bytes, reports)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return (reports + _skipped(records, sharded_steps(shard_count), len(done)),
            sharded_figures(records, result, done, interpreter_rss))


def sharded_figures(records: int, result: ShardedRun, done: list[processes.Step],
                    interpreter_rss: int) -> list[Figure]:
    """The totals once every shard is published, and the per-shard figures (a value a shard, shard 0 first)
    once every consumer has loaded."""
    shard_count, suffix = len(result.records), label(records)
    at = f"{records:,} records in {shard_count} shards"
    if len(done) < shard_count:
        return []
    publishes, loads = done[:shard_count], done[shard_count:]
    out = [Figure(f"sharded_first_publish_s_{suffix}", "s", [sum(s.seconds for s in publishes)],
                  f"combe publish --once --shards i of each shard's changelog, one after another: the sum, {at}"),
           Figure(f"sharded_first_publish_peak_rss_mb_{suffix}", "MB", [max(s.peak_rss for s in publishes) / MB],
                  "the largest shard publish's peak RSS"),
           Figure(f"sharded_publish_s_per_shard_{suffix}", "s", [s.seconds for s in publishes],
                  "each shard's publish, whole process, a value a shard"),
           Figure(f"sharded_publish_peak_rss_mb_per_shard_{suffix}", "MB", [s.peak_rss / MB for s in publishes],
                  "each shard's publish peak RSS"),
           Figure(f"sharded_disk_mb_{suffix}", "MB", [result.disk_bytes / MB],
                  "the changelogs, the store and the producer caches once every shard is published")]
    if len(loads) < shard_count:
        return out
    arrow = result.arrow_bytes
    return out + [
        Figure(f"sharded_consumer_load_s_per_shard_{suffix}", "s", [s.seconds for s in loads],
               "Consumer(shards=[i]) in a fresh process, whole process, a value a shard"),
        Figure(f"sharded_consumer_load_peak_rss_mb_per_shard_{suffix}", "MB", [s.peak_rss / MB for s in loads]),
        Figure(f"sharded_state_arrow_mb_per_shard_{suffix}", "MB", [a / MB for a in arrow],
               "table.nbytes of each shard's state"),
        Figure(f"sharded_state_arrow_mb_{suffix}", "MB", [sum(arrow) / MB], "table.nbytes of every shard's state"),
        Figure(f"sharded_producer_peak_rss_multiple_of_arrow_{suffix}", "x",
               [(s.peak_rss - interpreter_rss) / a for s, a in zip(publishes, arrow)],
               "(shard publish peak RSS - the interpreter's) / Arrow bytes of the shard, a value a shard",
               ("<=", 2.5)),
        Figure(f"sharded_consumer_load_peak_rss_multiple_of_arrow_{suffix}", "x",
               [(s.peak_rss - interpreter_rss) / a for s, a in zip(loads, arrow)],
               "(consumer load peak RSS - the interpreter's) / Arrow bytes of the shard, a value a shard")]


def run(sizes: list[int], tmp: Path | None, cap_bytes: int | None,
        shard_count: int | None = None) -> tuple[list[Figure], dict[str, Any]]:
    """Every size in turn (sharded in ``shard_count`` shards, or not); the figures and what the document adds
    for scale mode (steps, cap, errors)."""
    cap = cap_bytes or processes.memory_cap()
    log.info("scale mode: %s records%s, each step capped at %.1f GiB of RSS%s",
             " and ".join(f"{s:,}" for s in sizes), f" in {shard_count} shards" if shard_count else "",
             cap / 2**30, "; the producer keeps a --cache-dir" if has_cache_dir() else "")
    interpreter = processes.run(INTERPRETER).check().peak_rss
    all_figures: list[Figure] = []
    steps: list[StepReport] = []
    root = Path(tempfile.mkdtemp(prefix="combe-scale-", dir=tmp))
    try:
        for records in sizes:
            found, measured = (run_size(records, root, cap, interpreter) if shard_count is None else
                               run_sharded_size(records, shard_count, root, cap, interpreter))
            steps += found
            all_figures += measured
    finally:
        shutil.rmtree(root, ignore_errors=True)
    extra: dict[str, Any] = {"sizes": sizes, "shard_count": shard_count, "memory_cap_bytes": cap,
                             "interpreter_peak_rss_bytes": interpreter, "cache_dir": has_cache_dir(),
                             "steps": [asdict(s) for s in steps]}
    failed = {f"{s.records:,} {s.step}": s.detail for s in steps if s.status == "failed"}
    if failed:
        extra["errors"] = failed
    return all_figures, extra

