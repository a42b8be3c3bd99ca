"""Lookups on a nested column against the same values in a json column, in one run.

    python bench/nested.py [--records 1000000] [--runs 5] [--samples 100000]

Two datasets hold the same product records (``name``, ``price`` and a list
of 0 to 4 tag words, bench/data.py): in one ``tags`` is a ``list<string>``
column, in the other a ``json`` column (the list as JSON text, which is how
format version 1 stored nested values). Both are written with the format
layer (tests/support/written.py), as one snapshot each. Figures, medians
over ``--runs`` (each run measures both back to back):

- ``get_p50_us``: ``get(key)`` over random keys, one call timed at a time;
  also with ``columns=["tags"]`` (the tags column alone, so its own cost
  shows) as ``tags_only_get_p50_us``.
- ``get_many_keys_per_s``: ``get_many`` over batches of 1,000 random keys.

Each figure is given for ``list`` and ``json``, and as ``list / json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: the repository root holds bench/ and tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import data  # noqa: E402
from bench.lookups import get_p50_us, keys_per_s  # noqa: E402
from combe.consumer import Consumer  # noqa: E402
from combe.format.jsontext import json_text  # noqa: E402
from tests.support.written import Written, schema_of  # noqa: E402

WORK = Path("/tmp/combe-bench-nested")
TYPES = {"list": "list<string>", "json": "json"}


def build(n_records: int, work: Path = WORK) -> str:
    """A store with datasets ``list`` and ``json`` holding the same records (written once, then reused)."""
    store = work / str(n_records)
    if not (store / "written").exists():
        rows = data.rows(np.arange(n_records), seed=3)
        for name, tags in TYPES.items():
            encode = json_text if tags == "json" else list
            records = {data.key_of(i, "string"): {"name": row["name"], "price": row["price"],
                                                  "tags": encode(row["tags"])} for i, row in enumerate(rows)}
            Written(str(store), name).publish(records, schema_of(name="string", price="float64", tags=tags))
        (store / "written").touch()
    return str(store)


def measure(n_records: int, *, runs: int = 5, samples: int = 100_000, work: Path = WORK) -> dict[str, Any]:
    store = build(n_records, work)
    rng = random.Random(1)
    keys = [data.key_of(rng.randrange(n_records), "string") for _ in range(samples)]
    figures: dict[str, list[float]] = {}
    consumers = {name: Consumer(store, name) for name in TYPES}
    tags_only = {name: Consumer(store, name, columns=["tags"]) for name in TYPES}
    try:
        assert consumers["list"].get_many(keys[:1000]) == consumers["json"].get_many(keys[:1000])  # same records
        for consumer in [*consumers.values(), *tags_only.values()]:  # the first calls compile the readers
            consumer.get_many(keys[:1000])
            consumer.get(keys[0])
        for _ in range(runs):
            for name in TYPES:
                figures.setdefault(f"{name}_get_p50_us", []).append(get_p50_us(consumers[name].get, keys))
                figures.setdefault(f"{name}_tags_only_get_p50_us", []).append(get_p50_us(tags_only[name].get, keys))
                figures.setdefault(f"{name}_get_many_keys_per_s", []).append(
                    keys_per_s(consumers[name].get_many, keys, 1000))
    finally:
        for consumer in [*consumers.values(), *tags_only.values()]:
            consumer.close()
    result: dict[str, Any] = {"records": n_records, "runs": runs, "samples": samples}
    for name, values in figures.items():
        result[name] = round(statistics.median(values), 3)
        result[f"{name}_runs"] = [round(v, 3) for v in values]
    for figure in ("get_p50_us", "tags_only_get_p50_us", "get_many_keys_per_s"):
        result[f"{figure}_list_over_json"] = round(result[f"list_{figure}"] / result[f"json_{figure}"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=100_000, help="random keys per run")
    parser.add_argument("--work", type=Path, default=WORK, help="where the datasets are kept")
    args = parser.parse_args()
    print(json.dumps(measure(args.records, runs=args.runs, samples=args.samples, work=args.work), indent=1))


if __name__ == "__main__":
    main()
