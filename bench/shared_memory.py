"""Several processes with one cache_dir share the mapped pages: resident memory of 4 processes against 1.

    python bench/shared_memory.py [--records 1000000] [--processes 4]

Each worker process opens ``Consumer(store, "products", cache_dir=...)`` on
the same cache directory (as gunicorn workers on one host would), touches
every record once with ``get_many``, says it is ready and waits. The parent
then reads each worker's ``/proc/<pid>/smaps_rollup``: RSS counts every page
a process has mapped, shared or not; PSS divides each shared page among the
processes that map it, so the PSS of all workers added up is what the host
really pays. An idle worker (imports only) gives the per-process baseline
of the interpreter and libraries, reported beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: import the benchmark modules as the package `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.lookups import WORK, build_store  # noqa: E402

WORKER = """
import sys
from combe.consumer import Consumer
store, cache, records, key_type, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
sys.path.insert(0, sys.argv[6])
from bench.lookups import key_of
if not idle:
    consumer = Consumer(store, "products", cache_dir=cache)
    keys = [key_of(i, key_type) for i in range(records)]
    for i in range(0, records, 10_000):
        consumer.get_many(keys[i:i + 10_000])
    del keys
print("ready", flush=True)
sys.stdin.readline()
"""


def rollup(pid: int) -> dict[str, int]:
    """Rss and Pss of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss", "Shared_Clean", "Private_Dirty"):
            values[name.lower()] = int(rest.split()[0]) * 1024
    return values


def measure_group(count: int, store: str, cache: str, records: int, key_type: str, *, idle: bool = False
                  ) -> list[dict[str, int]]:
    """Start ``count`` workers together, read their memory while all of them hold the dataset."""
    here = str(Path(__file__).resolve().parent.parent)
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, store, cache, str(records), key_type,
                                 "1" if idle else "0", here], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True) for _ in range(count)]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        return [rollup(worker.pid) for worker in workers]
    finally:
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("\n")
            worker.stdin.flush()
            worker.wait(60)


def measure_shared_memory(n_records: int, processes: int = 4, key_type: str = "string",
                          work: Path = WORK) -> dict[str, Any]:
    store, _ = build_store(n_records, key_type, work)
    cache = str(work / f"{key_type}-{n_records}" / "cache")
    measure_group(1, store, cache, n_records, key_type)  # fills the cache, so every measured worker maps it
    idle = measure_group(1, store, cache, n_records, key_type, idle=True)[0]
    one = measure_group(1, store, cache, n_records, key_type)[0]
    group = measure_group(processes, store, cache, n_records, key_type)
    total_rss, total_pss = sum(g["rss"] for g in group), sum(g["pss"] for g in group)
    mib = 2**20
    return {
        "records": n_records, "processes": processes,
        "idle_process_rss_mib": idle["rss"] / mib, "idle_process_pss_mib": idle["pss"] / mib,
        "one_process_rss_mib": one["rss"] / mib, "one_process_pss_mib": one["pss"] / mib,
        "group_rss_total_mib": total_rss / mib, "group_pss_total_mib": total_pss / mib,
        "group_pss_per_process_mib": [round(g["pss"] / mib, 1) for g in group],
        "pss_total_multiple_of_one": total_pss / one["pss"],
        "rss_total_multiple_of_one": total_rss / one["rss"],
        # The dataset's share: what the group pays beyond its interpreters, against one process.
        "dataset_pss_multiple_of_one": (total_pss - processes * idle["pss"]) / (one["pss"] - idle["pss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--key-type", choices=("string", "int64"), default="string")
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    print(json.dumps(measure_shared_memory(args.records, args.processes, args.key_type, args.work), indent=1))


if __name__ == "__main__":
    main()
