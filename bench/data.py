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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from combe.format.partition import partitions_of

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


INT_KEY_BASE, INT_KEY_STEP = 1_000_000_007, 7_919
KEY_PREFIX, KEY_DIGITS = "sku-", 9


def key_of(index: int, key_type: str) -> str | int:
    """The key of record number ``index``: distinct for distinct indexes, sparse for int64."""
    if key_type == "int64":
        return INT_KEY_BASE + index * INT_KEY_STEP
    return f"{KEY_PREFIX}{index:0{KEY_DIGITS}d}"


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


@dataclass(frozen=True)
class ChangePlan:
    """Which record indexes a change set updates, adds and deletes, and the order its records come in:
    ``order`` permutes the list updated + added + removed."""

    updated: np.ndarray
    added: np.ndarray
    removed: np.ndarray
    order: np.ndarray

    def __len__(self) -> int:
        return len(self.order)


def change_plan(count: int, fraction: float = 0.01, seed: int = 9) -> ChangePlan:
    """``fraction`` of ``count`` keys (at least 10): 80% updated, 10% added, 10% deleted, in a shuffled order."""
    total = max(int(count * fraction), 10)
    rng = np.random.default_rng(seed)
    touched = rng.choice(count, size=total - total // 10, replace=False)
    removed, updated = touched[: total // 10], touched[total // 10:]
    added = np.arange(count, count + total // 10)
    return ChangePlan(updated, added, removed, rng.permutation(total))


def changes(count: int, key_type: str, fraction: float = 0.01, seed: int = 9) -> list[Change]:
    """The change set that makes version 2 (``change_plan``), as rows of the eleven-column shape."""
    plan = change_plan(count, fraction, seed)
    out: list[Change] = [(key_of(i, key_type), row)
                         for i, row in zip(plan.updated.tolist(), rows(plan.updated, seed + 1))]
    out += [(key_of(i, key_type), row) for i, row in zip(plan.added.tolist(), rows(plan.added, seed + 2))]
    out += [(key_of(i, key_type), None) for i in plan.removed.tolist()]
    return [out[i] for i in plan.order.tolist()]


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


# The changelog of issue 11's producer benchmarks: eight value fields, about 200 bytes a JSONL line
# (strings of three lengths, two ints, two floats, a bool, a nullable float, a list of tags), written as
# text straight from numpy draws with Arrow's string kernels: no Python object per record, so tens of
# millions of records take a minute rather than an hour. A float is written from integer cents or tenths,
# so it always has a decimal point and every reader infers a float column, never an int one.
PRODUCT_FIELDS = ("name", "description", "price", "quantity", "updated_at", "active", "rating", "tags")
PRODUCT_CHUNK = 250_000
UPDATED_2024_MS = 1_704_067_200_000
_TITLES = [word.title() for word in WORDS]


def _text(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _words(rng: np.random.Generator, n: int, low: int, high: int, separator: str, quote: str) -> pa.Array:
    """``n`` texts of ``low`` to ``high`` - 1 random words, each word inside ``quote``, joined by ``separator``."""
    counts = rng.integers(low, high, size=n)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    words = pa.array(WORDS).take(pa.array(rng.integers(len(WORDS), size=int(offsets[-1]))))
    if quote:
        words = _join(quote, words, quote)
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), words), separator)


def _decimal(units: np.ndarray, places: int) -> pa.Array:
    """``units`` / 10**places as decimal text with exactly ``places`` digits after the point."""
    scale = 10 ** places
    return _join(_text(units // scale), ".", pc.utf8_lpad(_text(units % scale), width=places, padding="0"))


def key_bytes(indexes: np.ndarray, key_type: str) -> pa.Array:
    """``key_of`` of every index as the text a topic's message key carries (and a shard is chosen by):
    ``sku-000000042``, or an int64 key's decimal text."""
    if key_type == "int64":
        return _text(INT_KEY_BASE + indexes.astype(np.int64) * INT_KEY_STEP)
    return _join(KEY_PREFIX, pc.utf8_lpad(_text(indexes), width=KEY_DIGITS, padding="0"))


def key_texts(indexes: np.ndarray, key_type: str) -> pa.Array:
    """``key_of`` of every index, as JSON text (a quoted string or an integer)."""
    keys = key_bytes(indexes, key_type)
    return keys if key_type == "int64" else _join('"', keys, '"')


def product_lines(indexes: np.ndarray, seed: int, key_type: str = "string") -> pa.Array:
    """One JSONL changelog line (newline included) per index, values drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    n = len(indexes)
    name = _join(pa.array(_TITLES).take(pa.array(rng.integers(len(WORDS), size=n))), " ",
                 pa.array(NOUNS).take(pa.array(rng.integers(len(NOUNS), size=n))), " ", _text(indexes % 1000))
    unrated = pa.array(rng.random(n) < 0.1)
    rating = pc.if_else(unrated, "null", _decimal(rng.integers(10, 51, size=n), 1))
    active = pc.if_else(pa.array(rng.random(n) < 0.9), "true", "false")
    return _join('{"key":', key_texts(indexes, key_type), ',"value":{"name":"', name,
                 '","description":"', _words(rng, n, 3, 8, " ", ""),
                 '","price":', _decimal(np.round(rng.lognormal(7.6, 1.0, size=n)).astype(np.int64), 2),
                 ',"quantity":', _text(rng.integers(0, 10_000, size=n)),
                 ',"updated_at":', _text(UPDATED_2024_MS + rng.integers(0, FIVE_YEARS_MS, size=n)),
                 ',"active":', active, ',"rating":', rating,
                 ',"tags":[', _words(rng, n, 0, 4, ",", '"'), "]}}\n")


def tombstone_lines(indexes: np.ndarray, key_type: str = "string") -> pa.Array:
    return _join('{"key":', key_texts(indexes, key_type), ',"value":null}\n')


def _write_lines(handle: BinaryIO, lines: pa.Array) -> int:
    """Write the lines' characters in one call: a string array's data buffer holds them back to back."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
    data = lines.buffers()[2]
    return handle.write(memoryview(data)[int(offsets[0]):int(offsets[-1])])


def write_products(path: Path, count: int, key_type: str = "string", seed: int = 11) -> int:
    """A changelog of ``count`` distinct records (indexes 0 .. count-1) in a shuffled order; the bytes written."""
    return write_sharded_products([path], count, key_type, seed)[0][0]


def write_sharded_products(paths: Sequence[Path], count: int, key_type: str = "string",
                           seed: int = 11) -> list[tuple[int, int]]:
    """``write_products``'s changelog split into one file per shard, as a topic's partitions hold it: the
    record of a key goes to ``paths[shard]``, its shard of ``len(paths)`` by Kafka's default partitioner
    (format/partition.py), each file keeping the changelog's order. (bytes, records) of each file.

    Chunk by chunk and vectorised: the chunk's lines are put in shard order with one stable take and each
    shard's run written in one call, so 100M records never become Python objects."""
    shards = len(paths)
    order = np.random.default_rng(seed).permutation(count)
    written = [[0, 0] for _ in paths]
    with ExitStack() as files:
        handles = [files.enter_context(open(path, "wb")) for path in paths]
        for start in range(0, count, PRODUCT_CHUNK):
            indexes = order[start:start + PRODUCT_CHUNK]
            lines = product_lines(indexes, seed + 1 + start, key_type)
            if shards == 1:
                written[0][0] += _write_lines(handles[0], lines)
                written[0][1] += len(lines)
                continue
            shard = partitions_of(key_bytes(indexes, key_type), key_type, shards)
            lines = lines.take(pa.array(np.argsort(shard, kind="stable")))
            ends = np.cumsum(np.bincount(shard, minlength=shards)).tolist()
            for i, (begin, end) in enumerate(zip([0, *ends[:-1]], ends)):
                written[i][0] += _write_lines(handles[i], lines.slice(begin, end - begin))
                written[i][1] += end - begin
    return [(size, records) for size, records in written]


def write_product_changes(path: Path, count: int, key_type: str = "string", fraction: float = 0.01,
                          seed: int = 12) -> ChangePlan:
    """The 1% change file for ``write_products(path, count)``: updates, additions, tombstones (``change_plan``)."""
    plan = change_plan(count, fraction, seed)
    lines = pa.concat_arrays([product_lines(plan.updated, seed + 1, key_type),
                              product_lines(plan.added, seed + 2, key_type),
                              tombstone_lines(plan.removed, key_type)]).take(pa.array(plan.order))
    with open(path, "wb") as handle:
        _write_lines(handle, lines)
    return plan
