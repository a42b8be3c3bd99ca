"""Consumer lookups and memory on N records, beside a plain dict of dicts, in one run.

    python bench/lookups.py [--records 1000000] [--key-type string|int64] [--runs 5] [--columns a,b]

Figures (medians over ``--runs``; every run measures combe and the dict back to back):

- ``get_p50_us``: ``consumer.get(key)`` timed call by call over random keys
  (the perf_counter pair adds about 0.1 us on both sides). Goal <= 2 us.
- ``get_many_keys_per_s``: ``consumer.get_many`` over batches of ``--batch``
  random keys, and over all sample keys in one call. Goal >= 2M keys/s.
  ``get_table_keys_per_s``: the same batches as one pyarrow Table each.
- ``index_bytes_per_record``: the key index a consumer holds beyond the Arrow
  columns (the snapshot's two int32 columns). Goal <= 16.
- ``beyond_arrow_after_load_bytes_per_record``: resident bytes a fresh process
  holds right after loading, beyond the Arrow columns (the key index and the
  blob's framing). Goal <= 16.
- ``rss_bytes_per_record``: resident memory a fresh process gains by loading
  the dataset (combe without and with a cache dir, after touching every
  record) or by building the dict of dicts from the same JSON values,
  against ``arrow_bytes_per_record`` (the View's columns). Goal combe <= 1.5x Arrow.

``measure_lookups(n_records)`` and ``measure_memory(n_records)`` return these
as a dict, for bench/run.py to reuse; ``build_store`` publishes the dataset
once (cached under ``--work``) with the real producer.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.producer import PublishOptions, Publisher, RecordFormat, open_source

WORK = Path("/tmp/combe-bench-lookups")
CATEGORIES = [f"category-{i:02d}" for i in range(24)]
WORDS = ("alpine amber arctic atlas aurora basalt beacon birch cedar cinder cobalt coral crest delta dune ember "
         "fable fern flint forge garnet glacier granite harbor hazel indigo iris jade juniper kestrel lagoon").split()


def key_of(index: int, key_type: str) -> str | int:
    return f"sku-{index:09d}" if key_type == "string" else 1_000_000_007 + index * 7_919


def write_changelog(path: Path, n_records: int, key_type: str, seed: int = 5) -> None:
    """Product records with eight value columns (strings, numbers, a bool, a nullable float, a JSON list)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for start in range(0, n_records, 100_000):
            n = min(100_000, n_records - start)
            words = rng.integers(len(WORDS), size=(n, 4)).tolist()
            category = rng.integers(len(CATEGORIES), size=n).tolist()
            price = np.round(rng.lognormal(3.0, 1.0, size=n), 2).tolist()
            quantity = rng.integers(0, 10_000, size=n).tolist()
            active = (rng.random(n) < 0.9).tolist()
            rating = np.round(rng.uniform(1, 5, size=n), 1).tolist()
            unrated = (rng.random(n) < 0.1).tolist()
            created = rng.integers(1_577_836_800_000, 1_735_689_600_000, size=n).tolist()
            tags = rng.integers(0, 4, size=n).tolist()
            for i in range(n):
                w = [WORDS[x] for x in words[i]]
                value = {"name": f"{w[0].title()} {w[1]} {(start + i) % 1000}", "category": CATEGORIES[category[i]],
                         "price": price[i], "quantity": quantity[i], "active": active[i],
                         "rating": None if unrated[i] else rating[i], "created_at": created[i],
                         "tags": w[2:2 + tags[i]]}
                handle.write(json.dumps({"key": key_of(start + i, key_type), "value": value}) + "\n")


def build_store(n_records: int, key_type: str = "string", work: Path = WORK) -> tuple[str, Path]:
    """A local store holding the dataset ``products`` (published once, then reused), and its changelog."""
    folder = work / f"{key_type}-{n_records}"
    changelog, store = folder / "changes.jsonl", folder / "store"
    if not (folder / "published").exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_changelog(changelog, n_records, key_type)
        with open_source(str(changelog)) as source:
            options = PublishOptions(fmt=RecordFormat(key_type=key_type))
            Publisher(Dataset.open(str(store), "products"), source, options).run_cycle()
        (folder / "published").touch()
    return str(store), changelog


def replay(changelog: Path) -> dict[Any, dict[str, Any]]:
    """The dict of dicts a read service would build from the same changelog."""
    state: dict[Any, dict[str, Any]] = {}
    with open(changelog, "rb") as handle:
        for line in handle:
            record = json.loads(line)
            state[record["key"]] = record["value"]
    return state


def get_p50_us(get: Callable[[Any], Any], keys: Sequence[Any]) -> float:
    clock = time.perf_counter
    samples = []
    for key in keys:
        start = clock()
        get(key)
        samples.append(clock() - start)
    return statistics.median(samples) * 1e6


def keys_per_s(get_many: Callable[[Sequence[Any]], Any], keys: Sequence[Any], batch: int) -> float:
    gc.collect()
    start = time.perf_counter()
    for i in range(0, len(keys), batch):
        get_many(keys[i:i + batch])
    return len(keys) / (time.perf_counter() - start)


def measure_lookups(n_records: int, *, key_type: str = "string", samples: int = 100_000, batch: int = 1000,
                    runs: int = 5, columns: list[str] | None = None, work: Path = WORK) -> dict[str, Any]:
    """Lookup speed of a Consumer and of a dict of dicts over the same records, medians of ``runs``."""
    store, changelog = build_store(n_records, key_type, work)
    state = replay(changelog)
    rng = random.Random(1)
    keys = [key_of(rng.randrange(n_records), key_type) for _ in range(samples)]
    figures: dict[str, list[float]] = {name: [] for name in (
        "get_p50_us", "dict_get_p50_us", "get_many_keys_per_s", "get_many_all_at_once_keys_per_s",
        "get_table_keys_per_s", "dict_get_many_keys_per_s")}
    with Consumer(store, "products", columns=columns) as consumer:
        view = consumer.view()
        for _ in range(runs):
            figures["get_p50_us"].append(get_p50_us(consumer.get, keys))
            figures["dict_get_p50_us"].append(get_p50_us(state.get, keys))
            figures["get_many_keys_per_s"].append(keys_per_s(consumer.get_many, keys, batch))
            figures["get_many_all_at_once_keys_per_s"].append(keys_per_s(consumer.get_many, keys, len(keys)))
            figures["get_table_keys_per_s"].append(keys_per_s(consumer.get_table, keys, batch))
            figures["dict_get_many_keys_per_s"].append(
                keys_per_s(lambda ks: [state.get(k) for k in ks], keys, batch))
        index_bytes = view.base.index_rows.nbytes + view.base.index_ends.nbytes
        result: dict[str, Any] = {
            "records": n_records, "key_type": key_type, "columns": columns, "batch": batch, "runs": runs,
            "arrow_bytes_per_record": view.table.nbytes / n_records,
            "index_bytes_per_record": index_bytes / n_records,
        }
    for name, values in figures.items():
        result[name] = statistics.median(values)
        result[f"{name}_runs"] = [round(v, 3) for v in values]
    result["get_p50_multiple_of_dict"] = result["get_p50_us"] / result["dict_get_p50_us"]
    return result


def _resident() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def probe(kind: str, source: str, key_type: str, n_records: int, cache: str) -> dict[str, Any]:
    """In a fresh process: resident bytes gained by holding the dataset, every record touched once."""
    keys = [key_of(i, key_type) for i in range(n_records)]  # the harness's, not the dataset's: made first
    gc.collect()
    before = _resident()
    loaded = 0
    if kind == "dict":
        held: Any = replay(Path(source))
        touched = sum(1 for key in keys if held.get(key) is not None)
    else:
        held = Consumer(source, "products", cache_dir=cache or None)
        gc.collect()
        loaded = _resident() - before  # the columns and the key index, before any lookup
        touched = sum(sum(r is not None for r in held.get_many(keys[i:i + 10_000]))
                      for i in range(0, len(keys), 10_000))
    gc.collect()
    return {"resident_bytes": _resident() - before, "loaded_bytes": loaded, "touched": touched,
            "arrow_bytes": held.view().table.nbytes if kind == "combe" else None}


def measure_memory(n_records: int, *, key_type: str = "string", work: Path = WORK) -> dict[str, Any]:
    """Resident bytes per record: combe (in memory, and mapped from a cache dir) against a dict of dicts."""
    store, changelog = build_store(n_records, key_type, work)
    cache = work / f"{key_type}-{n_records}" / "cache"

    def run(kind: str, source: str, cache_dir: str = "") -> dict[str, Any]:
        out = subprocess.run([sys.executable, __file__, "--probe", kind, source, "--key-type", key_type,
                              "--records", str(n_records), "--cache", cache_dir],
                             check=True, capture_output=True, text=True)
        found: dict[str, Any] = json.loads(out.stdout)
        return found

    run("combe", store, str(cache))  # fills the cache; the next combe probe maps it
    combe, mapped, plain = run("combe", store), run("combe", store, str(cache)), run("dict", str(changelog))
    arrow = combe["arrow_bytes"] / n_records
    result = {
        "records": n_records, "arrow_bytes_per_record": arrow,
        # Resident right after loading, beyond the Arrow columns: the key index and the blob's framing.
        "beyond_arrow_after_load_bytes_per_record": combe["loaded_bytes"] / n_records - arrow,
        "rss_bytes_per_record": combe["resident_bytes"] / n_records,
        "rss_bytes_per_record_cache_dir": mapped["resident_bytes"] / n_records,
        "dict_rss_bytes_per_record": plain["resident_bytes"] / n_records,
    }
    result["rss_multiple_of_arrow"] = result["rss_bytes_per_record"] / arrow
    result["rss_multiple_of_arrow_cache_dir"] = result["rss_bytes_per_record_cache_dir"] / arrow
    result["dict_over_combe"] = result["dict_rss_bytes_per_record"] / result["rss_bytes_per_record"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--key-type", choices=("string", "int64"), default="string")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=100_000, help="random keys per run")
    parser.add_argument("--batch", type=int, default=1000, help="keys per get_many call")
    parser.add_argument("--columns", help="comma-separated: load only these columns")
    parser.add_argument("--work", type=Path, default=WORK, help="where the published dataset is kept")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--probe", nargs=2, metavar=("KIND", "SOURCE"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe[0], args.probe[1], args.key_type, args.records, args.cache)))
        return
    columns = args.columns.split(",") if args.columns else None
    result = measure_lookups(args.records, key_type=args.key_type, samples=args.samples, batch=args.batch,
                             runs=args.runs, columns=columns, work=args.work)
    if not args.skip_memory and columns is None:
        result.update({f"memory_{k}": v for k, v in measure_memory(args.records, key_type=args.key_type,
                                                                    work=args.work).items()})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
