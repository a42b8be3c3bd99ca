"""Run every benchmark scenario, print the figures as a table and write them as JSON.

    python bench/run.py [--quick] [--out PATH] [--scenario NAME ...]
    python bench/run.py --scale [--scale-records N ...] [--memory-cap-gb G]
    python bench/run.py --scale --sharded [--shard-count K] [--scale-records N ...]

Full mode uses a million records and takes a while on a small machine;
``--quick`` uses 20,000 records and 3 runs a figure (the test suite runs it
once a figure, ``--runs 1``, as a smoke test). Every figure is the median of several runs, with min and max beside
it; bench/README.md says what each one means. ``--scale`` is the producer at
10M and 50M records (bench/scale.py), one run each, not for CI; ``--scale
--sharded`` publishes 100M records in 4 shards, one shard after another, and
loads a consumer of each.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# Run as a script: import the benchmark modules as the package `bench`, from the repository root.
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any  # noqa: E402

from bench.machine import combe_tree, describe  # noqa: E402
from bench.report import text  # noqa: E402
from bench import scale  # noqa: E402
from bench.scenarios import (cold_start, fold, http_endpoint, keys, lookups, memory, producer,  # noqa: E402
                             refresh, sharded, shared_memory, whole_state, write)
from bench.stats import Figure  # noqa: E402
from bench.workspace import FULL, QUICK, Mode, workspace  # noqa: E402

log = logging.getLogger("bench")

SCENARIOS = {
    "cold_start": cold_start.run,
    "refresh": refresh.run,
    "memory": memory.run,
    "lookups": lookups.run,
    "shared_memory": shared_memory.run,
    "write": write.run,
    "fold": fold.run,
    "http": http_endpoint.run,
    "producer": producer.run,
    "keys": keys.run,
    "whole_state": whole_state.run,
    "sharded": sharded.run,
}
DEFAULT_OUT = _HERE / "results.json"
DEFAULT_SCALE_OUT = _HERE / "results-scale.json"


def report(mode: Mode, machine: dict[str, Any], figures: list[Figure], errors: dict[str, str],
           seconds: float) -> dict[str, Any]:
    """The JSON document: every figure's median at the top level, details under ``figures``."""
    out: dict[str, Any] = {
        "mode": mode.name, "records": mode.records, "runs": mode.runs,
        "machine": machine, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(seconds, 1),
    }
    out.update({f.name: f.median for f in figures})
    out["goals"] = {f.name: {"goal": f"{f.goal[0]} {f.goal[1]:g}", "median": f.median, "met": f.met}
                    for f in figures if f.goal is not None}
    out["figures"] = {f.name: f.to_json() for f in figures}
    if errors:
        out["errors"] = errors
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 records instead of 1,000,000")
    parser.add_argument("--out", type=Path,
                        help=f"JSON results (default: {DEFAULT_OUT}; with --scale, {DEFAULT_SCALE_OUT})")
    parser.add_argument("--records", type=int, help="override the mode's record count")
    parser.add_argument("--runs", type=int, help="override the mode's runs per figure (5; quick mode 3)")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                        help="run only this scenario (repeatable; default: all)")
    parser.add_argument("--tmp", type=Path, help="directory for the data, store and broker files (default: $TMPDIR)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT",
                        help="a running Kafka broker to use (default: start one from the test jars)")
    parser.add_argument("--scale", action="store_true",
                        help="scale mode: publish, change and load 10M and 50M records (hours of CPU; not for CI)")
    parser.add_argument("--scale-records", type=int, nargs="+", metavar="N",
                        help=f"scale mode's sizes (default: {' '.join(map(str, scale.SIZES))}; with --sharded, "
                             f"{' '.join(map(str, scale.SHARDED_SIZES))})")
    parser.add_argument("--sharded", action="store_true",
                        help="scale mode: write a changelog per shard, publish a sharded dataset one shard at a "
                             "time (combe publish --shards i) and load a consumer of each shard")
    parser.add_argument("--shard-count", type=int, metavar="K",
                        help=f"with --sharded: the dataset's shards (default: {scale.SHARD_COUNT})")
    parser.add_argument("--memory-cap-gb", type=float,
                        help="scale mode: kill a step whose resident memory passes this many GiB (default: 85%% of "
                             "the machine's memory or what is available at the start less 1 GiB, the smaller)")
    args = parser.parse_args(argv)
    if args.sharded and not args.scale:
        parser.error("--sharded is a scale mode run: give --scale --sharded")
    if args.shard_count is not None and not args.sharded:
        parser.error("--shard-count is for the sharded scale run: give --scale --sharded --shard-count K")
    shard_count = scale.SHARD_COUNT if args.shard_count is None else args.shard_count
    if shard_count < 1:
        parser.error(f"--shard-count {shard_count}: give 1 or more shards")
    sizes = args.scale_records or list(scale.SHARDED_SIZES if args.sharded else scale.SIZES)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("combe", "bench.workspace"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started = time.perf_counter()
    machine = describe()  # now: the commit whose code this process has imported
    if combe_tree() != _HERE.parent:
        log.warning("combe is imported from %s, not from this checkout (%s): the figures measure that tree. "
                    "pip install -e %s to measure this one.", combe_tree(), _HERE.parent, _HERE.parent)
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if args.scale:
        mode = Mode("scale", max(sizes), 1, 0)
        try:
            cap = None if args.memory_cap_gb is None else int(args.memory_cap_gb * 2**30)
            figures, extra = scale.run(sizes, args.tmp, cap, shard_count if args.sharded else None)
        except Exception:  # noqa: BLE001 - report what was measured before the failure
            errors["scale"] = traceback.format_exc()
            log.error("scale mode failed:\n%s", errors["scale"])
        errors.update(extra.pop("errors", {}))
        document = report(mode, machine, figures, errors, time.perf_counter() - started) | extra
    else:
        mode = QUICK if args.quick else FULL
        if args.records:
            mode = replace(mode, records=args.records)
        if args.runs:
            mode = replace(mode, runs=args.runs)
        log.info("%s mode: %d records, %d runs per figure; building the data, store and topic",
                 mode.name, mode.records, mode.runs)
        with workspace(mode, args.tmp, args.bootstrap) as ws:
            log.info("ready after %.0f s", time.perf_counter() - started)
            for name in args.scenario or SCENARIOS:
                log.info("scenario %s", name)
                try:
                    figures += SCENARIOS[name](ws)
                except Exception:  # noqa: BLE001 - report the scenario that failed, run the others
                    errors[name] = traceback.format_exc()
                    log.error("scenario %s failed:\n%s", name, errors[name])
            document = report(mode, machine, figures, errors, time.perf_counter() - started)
    out = args.out or (DEFAULT_SCALE_OUT if args.scale else DEFAULT_OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(text(document))
    print(f"\n{mode.name} mode, {mode.records:,} records, {time.perf_counter() - started:.0f} s; wrote {out}")
    if errors:
        print(f"failed: {', '.join(errors)}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
