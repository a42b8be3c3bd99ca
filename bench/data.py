"""The benchmark's synthetic dataset: product-catalogue records, deterministic for a seed.

Eleven value columns of the kinds real topics carry (short and long strings,
a low-cardinality category, ints, floats, a bool, a nullable float, a
timestamp, a nested list of tags), under string keys (``sku-000000042``) or
sparse int64 keys. Values are drawn with numpy in bulk, so generating a
million records costs seconds, not minutes. Records come out in a shuffled
key order, as a topic would hold them; the changes that make version 2 update,
add and delete (tombstone) one per cent of the keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

Row = dict[str, Any]
Change = tuple[str | int, Row | None]

CHUNK = 50_000
WORDS = (
    "alpine amber arctic atlas aurora basalt beacon birch cedar cinder cobalt coral crest delta dune ember "
    "fable fern flint forge garnet glacier granite harbor hazel indigo iris jade juniper kestrel lagoon "
    "lumen maple marble meadow mesa nova oak onyx opal orbit pebble pine prism quartz raven ridge river "
    "sable sage sierra slate solar spruce summit tundra umber vale willow zephyr"
).split()
NOUNS = "backpack bottle cable chair charger desk headset jacket kettle lamp mug notebook pan shoe tent watch".split()
CATEGORIES = [f"category-{i:02d}" for i in range(24)]
COUNTRIES = "AR AU BE BR CA CH CL CN CZ DE DK ES FI FR GB IE IN IT JP KR MX NL NO NZ PL PT SE SG US ZA".split()
EPOCH_2020_MS = 1_577_836_800_000
FIVE_YEARS_MS = 5 * 365 * 86_400_000


def key_of(index: int, key_type: str) -> str | int:
    """The key of record number ``index``: distinct for distinct indexes, sparse for int64."""
    if key_type == "int64":
        return 1_000_000_007 + index * 7_919
    return f"sku-{index:09d}"


def rows(indexes: np.ndarray, seed: int) -> list[Row]:
    """One value per index, drawn from ``seed``; the same indexes and seed give the same rows."""
    rng = np.random.default_rng(seed)
    n = len(indexes)
    word = rng.integers(len(WORDS), size=(n, 16)).tolist()
    noun = rng.integers(len(NOUNS), size=n).tolist()
    lengths = rng.integers(8, 17, size=n).tolist()
    tag_counts = rng.integers(0, 5, size=n).tolist()
    category = rng.integers(len(CATEGORIES), size=n).tolist()
    brand = rng.integers(2_000, size=n).tolist()
    price = np.round(rng.lognormal(3.0, 1.0, size=n), 2).tolist()
    quantity = rng.integers(0, 10_000, size=n).tolist()
    active = (rng.random(n) < 0.9).tolist()
    rating = np.round(rng.uniform(1.0, 5.0, size=n), 1).tolist()
    unrated = (rng.random(n) < 0.1).tolist()
    created = (EPOCH_2020_MS + rng.integers(0, FIVE_YEARS_MS, size=n)).tolist()
    country = rng.integers(len(COUNTRIES), size=n).tolist()
    out = []
    for i, index in enumerate(indexes.tolist()):
        words = [WORDS[w] for w in word[i]]
        out.append({
            "name": f"{words[0].title()} {NOUNS[noun[i]]} {index % 1000}",
            "category": CATEGORIES[category[i]],
            "brand": f"brand-{brand[i]:04d}",
            "price": price[i],
            "quantity": quantity[i],
            "active": active[i],
            "rating": None if unrated[i] else rating[i],
            "created_at": created[i],
            "country": COUNTRIES[country[i]],
            "tags": words[1:1 + tag_counts[i]],
            "description": " ".join(words[:lengths[i]]),
        })
    return out


def records(count: int, key_type: str, seed: int = 8) -> Iterator[Change]:
    """``count`` records (indexes 0 .. count-1) in a shuffled order, in chunks to bound memory."""
    order = np.random.default_rng(seed).permutation(count)
    for start in range(0, count, CHUNK):
        indexes = order[start:start + CHUNK]
        for index, row in zip(indexes.tolist(), rows(indexes, seed + 1 + start)):
            yield key_of(index, key_type), row


def changes(count: int, key_type: str, fraction: float = 0.01, seed: int = 9) -> list[Change]:
    """The change set that makes version 2: ``fraction`` of ``count`` keys, 80% updated, 10% added, 10% deleted."""
    total = max(int(count * fraction), 10)
    rng = np.random.default_rng(seed)
    touched = rng.choice(count, size=total - total // 10, replace=False)
    removed, updated = touched[: total // 10], touched[total // 10:]
    added = np.arange(count, count + total // 10)
    out: list[Change] = [(key_of(i, key_type), row) for i, row in zip(updated.tolist(), rows(updated, seed + 1))]
    out += [(key_of(i, key_type), row) for i, row in zip(added.tolist(), rows(added, seed + 2))]
    out += [(key_of(i, key_type), None) for i in removed.tolist()]
    order = rng.permutation(len(out))
    return [out[i] for i in order.tolist()]


def write_jsonl(path: Path, items: Iterable[Change], *, append: bool = False) -> int:
    """Append or write ``{"key": ..., "value": ...}`` lines (a file source); the number written."""
    written = 0
    with open(path, "a" if append else "w", encoding="utf-8") as handle:
        for key, value in items:
            handle.write(json.dumps({"key": key, "value": value}, separators=(",", ":")))
            handle.write("\n")
            written += 1
    return written


def replay_jsonl(path: Path) -> dict[str | int, Row]:
    """The dict a read service builds from the changelog: latest value per key, tombstones delete."""
    state: dict[str | int, Row] = {}
    with open(path, "rb") as handle:
        for line in handle:
            record = json.loads(line)
            if record["value"] is None:
                state.pop(record["key"], None)
            else:
                state[record["key"]] = record["value"]
    return state
