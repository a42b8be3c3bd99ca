"""combe diff: the deltas between two versions against loading both versions whole, on the same pairs, in one run.

    python bench/diff.py [--records 200000] [--versions 41] [--change 0.01] [--runs 5]

Publishes ``--records`` records (one snapshot), then ``--versions`` - 1
versions that each update, add and remove ``--change`` of the keys, with the
producer's default snapshot policy (a snapshot every 20 versions, or once the
deltas since the last one weigh half of it). For pairs (last - d, last), each
run diffs the pair from the deltas and from the two states back to back (a
fresh Timeline each time, blobs read from a local store), and reports the
median seconds of each, their ratio run by run (states over deltas: above 1,
the deltas are faster), the bytes each reads, and which one ``Timeline.diff``
picks by itself (the one with fewer bytes to read).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

from bench.stats import Figure, ratio, timed
from combe.consumer.timeline import Timeline
from combe.format.dataset import Dataset
from combe.producer import PublishOptions, Publisher, open_source

DISTANCES = (1, 4, 16, 40)


def value(i: int, version: int) -> dict[str, Any]:
    return {"name": f"product {i} v{version}", "price": round(1 + (i * 7919 + version) % 10_000 / 100, 2),
            "stock": (i * 31 + version) % 500, "active": (i + version) % 7 != 0, "tags": [f"t{i % 13}", "x"]}


def publish(root: Path, records: int, versions: int, change: float) -> Dataset:
    """The dataset, published with the real producer from a JSONL changelog that grows version by version."""
    changelog = root / "changes.jsonl"
    dataset = Dataset.open(str(root / "store"), "products")
    rng = random.Random(7)
    live = list(range(records))
    next_key = records
    changelog.touch()
    with open_source(str(changelog)) as source:
        publisher = Publisher(dataset, source, PublishOptions())
        for version in range(1, versions + 1):
            lines: list[tuple[int, dict[str, Any] | None]]
            if version == 1:
                lines = [(i, value(i, 1)) for i in live]
            else:
                count = max(1, int(len(live) * change))
                picked = rng.sample(range(len(live)), 2 * count)
                lines = [(live[p], value(live[p], version)) for p in picked[:count]]
                gone = sorted(picked[count:], reverse=True)
                lines += [(live[p], None) for p in gone]
                for p in gone:
                    live[p] = live[-1]
                    live.pop()
                lines += [(k, value(k, version)) for k in range(next_key, next_key + count)]
                live += range(next_key, next_key + count)
                next_key += count
            with open(changelog, "a", encoding="utf-8") as handle:
                handle.writelines(json.dumps({"key": f"p{k:09d}", "value": v}) + "\n" for k, v in lines)
            result = publisher.run_cycle()
            assert result.version == version, result
    return dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--versions", type=int, default=41)
    parser.add_argument("--change", type=float, default=0.01, help="share of keys updated, added, removed per version")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="combe-bench-diff-") as work:
        dataset = publish(Path(work), args.records, args.versions, args.change)
        last = args.versions
        snapshots = [v for v in dataset.versions() if dataset.manifest(v).snapshot is not None]
        print(f"{args.records:,} records, versions 1-{last}, {args.change:.0%} of keys updated, added and removed "
              f"per version; snapshots at {snapshots}; {args.runs} runs, medians")
        print(f"{'pair':>9} {'changes':>8} {'deltas s':>9} {'states s':>9} {'states/deltas':>14} "
              f"{'deltas KB':>10} {'states KB':>10}  picked")
        for distance in (d for d in DISTANCES if d < last):
            pair = (last - distance, last)
            by_deltas = Figure(f"diff_{distance}_deltas_s", "s", [])
            by_states = Figure(f"diff_{distance}_states_s", "s", [])
            sizes: dict[str, int] = {}
            for _ in range(args.runs):
                for figure, method in ((by_deltas, "deltas"), (by_states, "states")):
                    seconds, found = timed(lambda: Timeline(dataset).diff(*pair, method=method))  # noqa: B023
                    figure.values.append(seconds)
                    sizes[method] = found.bytes_read
                    changes = len(found)
            picked = Timeline(dataset).diff(*pair).method
            faster = ratio("states_over_deltas", by_states, by_deltas)
            print(f"{pair[0]:>4}-{pair[1]:<4} {changes:>8,} {by_deltas.median:>9.3f} {by_states.median:>9.3f} "
                  f"{faster.median:>14.2f} {sizes['deltas'] / 1024:>10,.0f} {sizes['states'] / 1024:>10,.0f}  {picked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
