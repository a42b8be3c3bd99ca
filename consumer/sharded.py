"""A sharded dataset in a consumer: the shards it holds, each an ordinary View, swapped together as one version.

A sharded dataset's version names one version of every shard (format/sharded.py).
A consumer holds some of the shards (or all): for each, a Loader reaches the
shard version the dataset version names, exactly as for an unsharded dataset
(snapshot, deltas, reverse deltas, blob cache), and a ``ShardedView`` puts the
shards' Views together under the dataset version. The Consumer swaps whole
ShardedViews, one reference, so a reader never sees shard 3 at one dataset
version and shard 4 at another. Every shard's View is read with the dataset
version's columns (a column a shard has not seen yet reads as None there).

A key belongs to one shard (format/partition.py); a key of a shard this
consumer does not hold raises ShardNotHeld rather than missing silently.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from combe.format.cache import BlobCache
from combe.format.dataset import Dataset
from combe.format.errors import ConfigError, FormatError, ShardNotHeld
from combe.format.keys import lookup_key
from combe.format.manifest import BlobRef, Manifest
from combe.format.partition import partition_of, partitions_of
from combe.format.schema import Schema, conform
from combe.format.sharded import ShardedManifest

from .indexes import Fields, Index, normalize_fields
from .listeners import Update, changes
from .loader import Loaded, Loader
from .rows import Record
from .view import View, project


def held_shards(shards: Collection[int] | None, count: int, dataset: str) -> tuple[int, ...]:
    """The shards a consumer holds: ``shards`` checked against the dataset's ``count``, or all of them."""
    if shards is None:
        return tuple(range(count))
    if isinstance(shards, (str, bytes)) or not isinstance(shards, Collection):
        raise ConfigError(f"shards={shards!r}: give a list of shard numbers, e.g. shards=[0, 1]")
    wrong = [s for s in shards if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < count]
    if wrong or not shards:
        raise ConfigError(f"shards={sorted(shards, key=str)!r}: dataset {dataset!r} has shards 0 to {count - 1}; "
                          "give one or more of them")
    return tuple(sorted(set(shards)))


class ShardedView:
    """One version of a sharded dataset, as far as the shards held: ``get``, ``get_many``, ``get_table``,
    ``index``, ``table``, ``version``, like a View. Safe to share between threads; never changes.

    ``views`` maps each held shard to its View. ``table`` is the held shards'
    rows, each shard sorted by key, shards in ascending order.
    """

    def __init__(self, manifest: ShardedManifest, views: dict[int, View],
                 columns: Collection[str] | None = None) -> None:
        self.manifest = manifest
        self.version = manifest.version
        self.columns = None if columns is None else frozenset(columns)
        self.schema: Schema = project(manifest.schema, self.columns)
        self.views = dict(sorted(views.items()))
        self.shards = tuple(self.views)
        self.shard_count = manifest.shard_count
        self._key_type = self.schema.key_type
        self._arrow_key = pa.string() if self._key_type == "string" else pa.int64()
        self._table: pa.Table | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> ShardedView:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to release: holding the view keeps its version alive, and that is all."""

    def __len__(self) -> int:
        """Records in the shards held."""
        return sum(len(view) for view in self.views.values())

    def __repr__(self) -> str:
        return (f"<ShardedView {self.manifest.dataset} version {self.version}: shards {list(self.shards)} of "
                f"{self.shard_count}, {len(self)} records>")

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.manifest.tags)

    def shard_of(self, key: Any) -> int:
        """The shard ``key`` belongs to, held or not (KeyTypeError for a key the dataset cannot hold)."""
        return partition_of(lookup_key(key, self._key_type), self._key_type, self.shard_count)

    def _not_held(self, key: Any, shard: int) -> ShardNotHeld:
        return ShardNotHeld(f"key {key!r:.80} of {self.manifest.dataset} is in shard {shard}; this consumer holds "
                            f"shards {', '.join(map(str, self.shards))} of {self.shard_count}",
                            dataset=self.manifest.dataset, shard=shard, held=self.shards)

    # -- lookups ------------------------------------------------------------------

    def get(self, key: Any) -> Record | None:
        """The record with ``key`` as a new dict, or None; ShardNotHeld if its shard is not held."""
        key = lookup_key(key, self._key_type)
        shard = partition_of(key, self._key_type, self.shard_count)
        view = self.views.get(shard)
        if view is None:
            raise self._not_held(key, shard)
        return view.get(key)

    def _split(self, keys: Iterable[Any]) -> tuple[list[Any], dict[int, np.ndarray]]:
        """The keys coerced, and for each shard they fall in, their positions; ShardNotHeld names the first
        key outside the held shards."""
        keys = list(keys)
        if not all(type(k) is (str if self._key_type == "string" else int) for k in keys):
            keys = [lookup_key(k, self._key_type, f"keys[{i}]") for i, k in enumerate(keys)]
        try:
            array = pa.array(keys, self._arrow_key)
        except OverflowError:  # an int beyond int64: lookup_key names it
            keys = [lookup_key(k, self._key_type, f"keys[{i}]") for i, k in enumerate(keys)]
            array = pa.array(keys, self._arrow_key)
        shards = partitions_of(array, self._key_type, self.shard_count) if keys else np.zeros(0, np.int64)
        outside = ~np.isin(shards, np.array(self.shards, np.int64))
        if outside.any():
            first = int(np.argmax(outside))
            raise self._not_held(keys[first], int(shards[first]))
        return keys, {int(s): np.flatnonzero(shards == s) for s in np.unique(shards)}

    def get_many(self, keys: Iterable[Any]) -> list[Record | None]:
        """Records for ``keys`` in order, None where absent, all from this version."""
        keys, parts = self._split(keys)
        if len(parts) == 1:
            return self.views[next(iter(parts))].get_many(keys)
        out: list[Record | None] = [None] * len(keys)
        for shard, positions in parts.items():
            at = positions.tolist()
            for i, record in zip(at, self.views[shard].get_many([keys[i] for i in at])):
                out[i] = record
        return out

    def get_table(self, keys: Iterable[Any]) -> pa.Table:
        """The records for ``keys`` as a pyarrow Table in the order of ``keys``; absent keys are left out."""
        keys, parts = self._split(keys)
        if len(parts) == 1:
            return conform(self.views[next(iter(parts))].get_table(keys), self.schema)
        tables: list[pa.Table] = []
        order: list[int] = []
        for shard, positions in parts.items():
            at = positions.tolist()
            found = self.views[shard].get_table([keys[i] for i in at])
            tables.append(conform(found, self.schema))
            # Which of the shard's keys were found, by the keys the table holds (absent keys are left out).
            present = set(found.column(self.schema.key_field).to_pylist())
            order.extend(i for i in at if keys[i] in present)
        if not tables:
            return self.schema.to_arrow().empty_table()
        merged = pa.concat_tables(tables)
        return merged.take(pa.array(np.argsort(np.array(order, np.int64), kind="stable")))

    # -- indexes -------------------------------------------------------------------

    def index(self, fields: str | tuple[str, ...]) -> ShardedIndex:
        """An index on ``fields`` over the held shards: each shard's index, results merged in order."""
        names = normalize_fields(fields)
        return ShardedIndex(self, names, [view.index(names) for view in self.views.values()])

    # -- the whole table -----------------------------------------------------------

    @property
    def table(self) -> pa.Table:
        """The held shards' rows as one pyarrow Table: each shard sorted by key, shards in ascending order."""
        if len(self.views) == 1:
            return conform(next(iter(self.views.values())).table, self.schema)
        with self._lock:
            if self._table is None:
                self._table = pa.concat_tables([conform(view.table, self.schema) for view in self.views.values()])
            return self._table


class ShardedIndex:
    """An index over the held shards: ``get`` merges the shards' results by key, ``range`` by value.

    A page (``offset``, ``limit``) asks each shard for its first
    ``offset + limit`` matches, so a page costs up to the number of shards
    held times that, not its own size.
    """

    def __init__(self, view: ShardedView, fields: Fields, parts: list[Index]) -> None:
        self.fields = fields
        self.view = view
        self._parts = parts
        self._key = view.schema.key_field

    def get(self, value: Any, *, offset: int = 0, limit: int | None = None) -> list[Record]:
        """The records whose field (or tuple of fields) equals ``value``, in key order; [] if none."""
        wanted = None if limit is None else offset + limit
        runs = [part.get(value, limit=wanted) for part in self._parts]
        return _page(runs, lambda record: record[self._key], offset, limit)

    def range(self, lo: Any = None, hi: Any = None, *, offset: int = 0, limit: int | None = None) -> list[Record]:
        """Records with ``lo <= value < hi`` (None: unbounded), in value order (ties in key order)."""
        wanted = None if limit is None else offset + limit
        runs = [part.range(lo, hi, limit=wanted) for part in self._parts]
        if not self._parts:
            return []
        values_of = self._parts[0].values_of
        return _page(runs, lambda record: (values_of(record), record[self._key]), offset, limit)

    def __repr__(self) -> str:
        return f"<ShardedIndex {self.fields} of {self.view!r}>"


def _page(runs: list[list[Record]], order: Callable[[Record], Any], offset: int, limit: int | None) -> list[Record]:
    merged: Iterator[Record] = heapq.merge(*runs, key=order)
    return list(itertools.islice(merged, offset, None if limit is None else offset + limit))


class _ShardBlobs:
    """A shard's blobs through the consumer's one blob cache (files are named by sha256, so shards share it)."""

    def __init__(self, cache: BlobCache, dataset: Dataset) -> None:
        self.cache = cache
        self.dataset = dataset

    @property
    def fetched(self) -> int:
        return self.cache.fetched

    def table(self, ref: BlobRef, owner: Manifest) -> pa.Table:
        return self.cache.table(ref, owner, self.dataset)


@dataclass
class ShardedLoaded:
    """A ShardedView and how each held shard got there (the Loaded of each shard)."""

    view: ShardedView
    parts: dict[int, Loaded]

    def describe(self) -> str:
        moved = [f"shard {i}: {part.plan.describe()}" for i, part in self.parts.items() if part.plan.steps
                 or part.plan.start != "current"]
        return "; ".join(moved) if moved else "no shard changed"

    def pairs(self, previous: ShardedView | None) -> list[tuple[Loaded, View | None]]:
        """Each shard's Loaded with the View it started from, for the blob cache's account of what is in use."""
        return [(part, previous.views.get(i) if previous else None) for i, part in self.parts.items()]


class ShardedLoader:
    """Reaches dataset versions for the shards held: one Loader per shard, shards read with the dataset's columns."""

    def __init__(self, dataset: Dataset, count: int, shards: tuple[int, ...], cache: BlobCache | None, *,
                 max_deltas: int, columns: Collection[str] | None) -> None:
        self.dataset = dataset
        self.count = count
        self.columns = None if columns is None else frozenset(columns)
        self.loaders: dict[int, Loader] = {}
        for shard in shards:
            part = dataset.shard(shard, count)
            self.loaders[shard] = Loader(part, _ShardBlobs(cache, part) if cache is not None else None,
                                         max_deltas=max_deltas, columns=self.columns)
        self._manifests: dict[int, ShardedManifest] = {}  # never change, so keeping them is safe

    def manifest(self, version: int) -> ShardedManifest:
        if version not in self._manifests:
            manifest = self.dataset.sharded_manifest(version)
            if manifest.shard_count != self.count:
                raise FormatError(f"{self.dataset.url}: version {version} has {manifest.shard_count} shards; the "
                                  f"dataset was announced with {self.count}")
            self._manifests[version] = manifest
        return self._manifests[version]

    def load(self, target: int, current: ShardedView | None = None) -> ShardedLoaded:
        """The ShardedView of ``target``: each held shard moved to the version ``target`` names."""
        manifest = self.manifest(target)
        parts: dict[int, Loaded] = {}
        for shard, loader in self.loaders.items():
            version = manifest.shards[shard].version
            path = f"{loader.dataset.url}/versions/{version:012d}.json"
            manifest.check_shard(shard, loader.manifest(version), path)
            loaded = loader.load(version, current.views[shard] if current else None)
            if loaded.view.manifest.schema != manifest.schema:
                loaded.view = loaded.view.with_manifest(replace(loaded.view.manifest, schema=manifest.schema))
            parts[shard] = loaded
        return ShardedLoaded(ShardedView(manifest, {s: p.view for s, p in parts.items()}, self.columns), parts)


# What a Consumer serves: a View of an unsharded dataset, a ShardedView of a sharded one (same reading methods).
AnyView: TypeAlias = View | ShardedView


def sharded_changes(previous: ShardedView, loaded: ShardedLoaded) -> Update:
    """What changed between two versions in the held shards: each shard's changes, together."""
    added: set[Any] = set()
    updated: set[Any] = set()
    removed: set[Any] = set()
    for shard, part in loaded.parts.items():
        if part.touched == []:
            continue  # the shard did not move
        found = changes(previous.views[shard], part.view, part.touched)
        added |= found.added
        updated |= found.updated
        removed |= found.removed
    return Update(previous.manifest.dataset, previous.version, loaded.view.version, frozenset(added),
                  frozenset(updated), frozenset(removed))
