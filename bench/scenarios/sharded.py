"""Sharded datasets (issue 16): folding a 16-partition topic with 1, 2 and 4 producer processes, and a
consumer holding 1 of 4 shards against one holding the whole dataset.

Fold: the mode's records (bench/data.py ``records``) are produced into a
compacted topic of 16 partitions with Kafka's default partitioner (murmur2,
which sharded datasets rely on). Each run publishes the topic into a new
store as a dataset of 4 shards, with P = 1, 2 or 4 ``combe publish --once``
processes started together, each holding 4 / P shards (4 partitions a
shard); the figure is the wall time from the start of the first to the exit
of the last, and the speed-up is the 1-process time over the P-process time
of the same run. Every run checks that the committed dataset version holds
every record. The machine's cores bound the speed-up (bench/README.md gives
the count).

Consumer: a new process opens ``Consumer(store, dataset, shards=[0])`` or
``Consumer(store, dataset)`` on the store of the last run and reports the
RSS it added (VmRSS after less before, as scenarios/memory.py) and the
seconds the constructor took (the load). The goal: one shard costs within
10% of a quarter of the whole (<= 0.275 of it).

Quick mode measures one fold run and one consumer pair: it is the suite's
smoke test, not a figure.

Run as a module for one probe: ``python -m bench.scenarios.sharded STORE DATASET [SHARD]``.
"""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.kafka_broker import create_topic

from .. import data
from ..kafka_topic import produce
from ..stats import Figure, ratio
from .memory import _status

if TYPE_CHECKING:
    from ..workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 16
SHARDS = 4
PROCESSES = (1, 2, 4)
DATASET = "sharded"
QUARTER_GOAL = 0.25 * 1.1


def _shard_lists(processes: int) -> list[str]:
    """The --shards of each of ``processes`` processes: 4 / processes consecutive shards each."""
    each = SHARDS // processes
    return [f"{i * each}-{(i + 1) * each - 1}" for i in range(processes)]


def fold(bootstrap: str, topic: str, store: Path, processes: int, records: int) -> float:
    """Publish the topic into ``store`` with ``processes`` processes at once; the wall seconds."""
    argv = [sys.executable, "-m", "combe", "publish", "--once", "--source", f"kafka://{bootstrap}/{topic}",
            "--store", str(store), "--dataset", DATASET, "--shard-count", str(SHARDS), "--json"]
    started = time.perf_counter()
    running = [subprocess.Popen([*argv, "--shards", shards], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for shards in _shard_lists(processes)]
    outputs = [process.communicate() for process in running]
    seconds = time.perf_counter() - started
    for process, (_, err) in zip(running, outputs):
        if process.returncode != 0:
            raise RuntimeError(f"combe publish --shards failed ({process.returncode}): {err[-2000:]}")
    from combe.format.dataset import Dataset

    dataset = Dataset.open(str(store), DATASET)
    version = dataset.announced().version
    held = dataset.sharded_manifest(version).record_count if version else 0
    if held != records:
        raise AssertionError(f"{processes} processes committed {held} records, not {records}")
    return seconds


def _probe(store: str, dataset: str, shard: int | None) -> dict[str, Any]:
    from combe.consumer import Consumer

    gc.collect()
    before = _status("VmRSS")
    started = time.perf_counter()
    consumer = Consumer(store, dataset, shards=None if shard is None else [shard])
    seconds = time.perf_counter() - started
    gc.collect()
    after = _status("VmRSS")
    records = len(consumer)
    consumer.close()
    return {"records": records, "rss_bytes": after - before, "load_s": seconds}


def probe(store: Path, shard: int | None) -> dict[str, Any]:
    """One consumer in a new process."""
    command = [sys.executable, "-m", "bench.scenarios.sharded", str(store), DATASET,
               *([] if shard is None else [str(shard)])]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"sharded probe failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def run(ws: Workspace) -> list[Figure]:
    records = ws.mode.records
    topic = f"sharded-{uuid.uuid4().hex[:8]}"
    create_topic(ws.bootstrap, topic, partitions=PARTITIONS, compact=True)
    produce(ws.bootstrap, topic, data.records(records, "string"), partitioner="murmur2_random")
    root = ws.root / "sharded"
    root.mkdir(exist_ok=True)
    scale = f"{records:,} records, {PARTITIONS} partitions, {SHARDS} shards"
    folds = {p: Figure(f"sharded_fold_{p}_processes_s", "s", [],
                       f"combe publish --once --shards, {p} process(es) at once, wall time, {scale}")
             for p in PROCESSES}
    # Quick mode (the suite's smoke test) is short of time: one fold run, one pair of consumer probes.
    quick = ws.mode.name == "quick"
    store = root / "none"
    for number in range(1 if quick else ws.mode.runs):
        for p in PROCESSES:
            shutil.rmtree(store, ignore_errors=True)  # the consumers below read the last run's store only
            store = root / f"run-{number}-{p}"
            folds[p].values.append(fold(ws.bootstrap, topic, store, p, records))
    figures = list(folds.values())
    figures += [ratio(f"sharded_fold_speedup_{p}_processes", folds[1], folds[p],
                      note=f"1-process fold time / {p}-process fold time, run by run") for p in PROCESSES[1:]]
    whole_rss = Figure("sharded_whole_rss_mb", "MB", [], "RSS a consumer of all 4 shards added")
    one_rss = Figure("sharded_one_shard_rss_mb", "MB", [], "RSS a consumer of shard 0 of 4 added")
    whole_load = Figure("sharded_whole_load_s", "s", [], "Consumer() of all 4 shards, seconds")
    one_load = Figure("sharded_one_shard_load_s", "s", [], "Consumer(shards=[0]) of 4, seconds")
    for _ in range(1 if quick else ws.mode.runs):
        whole, one = probe(store, None), probe(store, 0)
        if whole["records"] != records or not 0 < one["records"] < records:
            raise AssertionError(f"consumers hold {whole['records']} and {one['records']} of {records} records")
        whole_rss.values.append(whole["rss_bytes"] / 1e6)
        one_rss.values.append(one["rss_bytes"] / 1e6)
        whole_load.values.append(whole["load_s"])
        one_load.values.append(one["load_s"])
    figures += [whole_rss, one_rss, whole_load, one_load,
                ratio("sharded_one_shard_rss_fraction", one_rss, whole_rss, note="RSS of 1 of 4 shards / whole",
                      goal=("<=", QUARTER_GOAL)),
                ratio("sharded_one_shard_load_fraction", one_load, whole_load,
                      note="load time of 1 of 4 shards / whole", goal=("<=", QUARTER_GOAL))]
    return figures


if __name__ == "__main__":
    shard_arg = int(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(_probe(sys.argv[1], sys.argv[2], shard_arg)))
