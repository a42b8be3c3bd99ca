"""Resident memory per record: a dict of dicts against a combe consumer, each in its own process.

Method: a fresh Python process imports what it needs, settles the garbage
collector and reads its resident set size (VmRSS in /proc/self/status:
anonymous memory plus mapped file pages, which is what the kernel charges
the process). It then builds its copy of the dataset, collects garbage and
reads VmRSS again; the difference divided by the record count is the figure.
Each process also reports its peak (VmHWM) over the same baseline. Separate
processes keep one side's freed-but-retained heap from landing in the
other's figure.

The dict side is built from the same JSON values the topic carries (the
changelog file), so no Kafka client buffers are counted against it. The
combe side is ``Consumer(store, dataset)`` held open.

Run as a module for one probe: ``python -m bench.scenarios.memory dict CHANGELOG``
or ``... combe STORE DATASET [SHARD]`` (SHARD: hold that shard only); it prints
one JSON line.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..stats import Figure, ratio

if TYPE_CHECKING:
    from ..workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]


def _status(field: str) -> int:
    """A size from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _probe(kind: str, args: list[str]) -> dict[str, Any]:
    if kind == "dict":
        from ..data import replay_jsonl

        def build() -> tuple[Any, int, int]:
            state = replay_jsonl(Path(args[0]))
            return state, len(state), 0
    else:
        from combe.consumer import Consumer
        from combe.consumer.metrics import memory

        # A third argument holds one shard of a sharded dataset (bench/scale.py's sharded run).
        shards = [int(args[2])] if len(args) > 2 else None

        def build() -> tuple[Any, int, int]:
            consumer = Consumer(args[0], args[1], shards=shards)
            # The Arrow columns the consumer holds, not ``view().table``: over a delta that builds (and keeps) a
            # merged copy of the whole state, which a consumer never does by itself.
            return consumer, len(consumer), memory(consumer.view())["columns"]
    gc.collect()
    before = _status("VmRSS")
    held, records, arrow_bytes = build()
    gc.collect()
    after = _status("VmRSS")
    return {"records": records, "rss_bytes": after - before, "peak_bytes": _status("VmHWM") - before,
            "arrow_bytes": arrow_bytes, "held": type(held).__name__}


def probe(kind: str, *args: str) -> dict[str, Any]:
    """One probe in a new process."""
    command = [sys.executable, "-m", "bench.scenarios.memory", kind, *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {kind} failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def run(ws: Workspace) -> list[Figure]:
    name = ws.datasets["string"]
    dict_side = Figure("dict_bytes_per_record", "B", [], "resident bytes per record, dict of dicts")
    combe_side = Figure("combe_bytes_per_record", "B", [], "resident bytes per record, combe Consumer")
    dict_peak = Figure("dict_peak_bytes_per_record", "B", [], "peak resident bytes per record while building")
    combe_peak = Figure("combe_peak_bytes_per_record", "B", [], "peak resident bytes per record while loading")
    arrow = Figure("arrow_bytes_per_record", "B", [], "Arrow data (table.nbytes) per record, for scale")
    for _ in range(ws.mode.runs):
        for figure, peak, found in ((dict_side, dict_peak, probe("dict", str(ws.changelogs["string"]))),
                                    (combe_side, combe_peak, probe("combe", ws.store, name))):
            figure.values.append(found["rss_bytes"] / found["records"])
            peak.values.append(found["peak_bytes"] / found["records"])
            if found["arrow_bytes"]:
                arrow.values.append(found["arrow_bytes"] / found["records"])
    return [dict_side, combe_side,
            ratio("memory_ratio_dict_over_combe", dict_side, combe_side, goal=(">=", 8)),
            ratio("combe_memory_multiple_of_arrow", combe_side, arrow, goal=("<=", 1.5)),
            dict_peak, combe_peak, arrow]


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1], sys.argv[2:])))
