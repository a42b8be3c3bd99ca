"""One immutable version of a dataset, as readers see it.

A View is a snapshot (``Base``) plus an overlay of the rows that deltas since
that snapshot changed. Applying a delta copies the small overlay and leaves
the snapshot's columns and index untouched, so a refresh costs what the
delta holds, not what the dataset holds. Nothing a reader can see changes
after a View is built; the Consumer swaps whole Views. Indexes are built on
first use and cached on the View; the part over the snapshot is shared by
every View on the same Base, so after a delta only the overlay is indexed.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Collection, Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from combe.format.delta import ADDED, OP_COLUMN, REMOVED, UPDATED
from combe.format.errors import ConfigError, FormatError, IntegrityError
from combe.format.keys import lookup_key
from combe.format.manifest import Manifest
from combe.format.jsontext import json_text
from combe.format.keys import INT64_MAX, INT64_MIN
from combe.format.schema import Schema, conform, conform_record, grows

from .base import Base
from .indexes import BaseIndex, Fields, Index, OverlayPart, base_index, field_kinds, normalize_fields
from .rows import Record, batch_builder, compile_function, python_values, record_source, value_source

# Below this many keys, get_many looks keys up one by one: the vectorised path has a fixed cost.
BATCH_MIN = 32

Overlay = dict[Any, Record | None]


def project(schema: Schema, columns: Collection[str] | None) -> Schema:
    """``schema`` with only ``columns`` (and the key column), in the schema's order."""
    if columns is None:
        return schema
    return Schema(schema.key_field, schema.key_type, {n: k for n, k in schema.columns.items() if n in columns})


class View:
    """A whole version: ``get``, ``get_many``, ``index``, ``table``, ``version``. Safe to share between threads.

    ``get(key)`` returns the record as a new dict, or None; it is a function
    generated for this View's schema and stored on the instance, so a lookup
    is a single call.
    """

    get: Callable[[Any], Record | None]

    def __init__(self, manifest: Manifest, base: Base, base_version: int, overlay: Overlay | None = None,
                 *, columns: Collection[str] | None = None, deltas_applied: int = 0, chain_bytes: int = 0,
                 count: int | None = None) -> None:
        self.manifest = manifest
        # The records this View holds, counted from what was loaded (the base's rows, then each delta's
        # additions and removals), never taken from the manifest: the loader compares the two.
        self.count = base.count if count is None else count
        self.version = manifest.version
        self.columns = None if columns is None else frozenset(columns)
        self.schema: Schema = project(manifest.schema, self.columns)
        self.base = base
        self.base_version = base_version
        self.overlay: Overlay = overlay or {}
        self.deltas_applied = deltas_applied
        self.chain_bytes = chain_bytes  # bytes of the deltas applied over the base, for the loader's choice
        self._names = list(self.schema.columns)
        # The base is read by its own column types: a column that was all null in the snapshot
        # (Arrow type null) and typed by a later version reads as None, and the reverse.
        self._kinds = [base.kinds.get(name, kind) for name, kind in self.schema.columns.items()]
        self._build = batch_builder(self.schema.key_field, self._names)
        self._readers = [base.column_reader(name, kind) for name, kind in self.schema.columns.items()]
        self.get = self._compile_get()
        key_type = self.schema.to_arrow().field(self.schema.key_field).type
        self._overlay_keys = pa.array(list(self.overlay), key_type)
        self._table: pa.Table | None = None
        self._indexes: dict[Fields, tuple[BaseIndex, OverlayPart]] = {}
        self._lock = threading.Lock()

    def _compile_get(self) -> Callable[[Any], Record | None]:
        env: dict[str, Any] = dict(self.base.lookup_env)
        wanted = self.schema.columns.values()
        columns = [(name, value_source(i, self.base.arrays.get(name), kind, env, want))
                   for i, (name, kind, want) in enumerate(zip(self._names, self._kinds, wanted))]
        key_type = self.schema.key_type
        env.update(_overlay=self.overlay, _coerce=lambda key: lookup_key(key, key_type))
        # Keys of the stored type skip the coercion (one type check); an int out of int64 is refused like
        # any other key that cannot be one (format/keys.py), not looked up and missed.
        exact = {"string": "type(key) is not str",
                 "int64": f"type(key) is not int or not {INT64_MIN} <= key <= {INT64_MAX}"}.get(
            key_type, "True")  # a compound key is always read by lookup_key: its stored text is not a key
        lines = [f"    if {exact}:", "        key = _coerce(key)"]
        if self.overlay:
            lines += ["    if key in _overlay:",
                      "        found = _overlay[key]",
                      "        return None if found is None else dict(found)"]
        source = ("def get(key):\n" + "\n".join(lines) + "\n"
                  + self.base.lookup_source(record_source(self.schema.key_field, columns), "return None"))
        return compile_function(source, "get", env)

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to release: holding the View keeps its version alive, and that is all."""

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"<View {self.manifest.dataset} version {self.version}: {len(self)} records>"

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    @property
    def tags(self) -> dict[str, str]:
        """The tags this version was published with (``combe publish --tag``), as a new dict."""
        return dict(self.manifest.tags)

    # -- batches -------------------------------------------------------------------

    def get_many(self, keys: Iterable[Any]) -> list[Record | None]:
        """Records for ``keys``, in order, None where absent.

        Found columnwise: the keys are hashed and resolved with numpy, each
        column's values taken for all found rows at once, then zipped into dicts.
        """
        keys = keys if isinstance(keys, list) else list(keys)
        if len(keys) < BATCH_MIN:
            return list(map(self.get, keys))
        keys, rows, overlaid = self._locate(keys)
        hit = np.flatnonzero(rows >= 0)
        if len(hit) == len(keys):
            return self._records(keys, rows)  # type: ignore[return-value]
        out: list[Record | None] = [None] * len(keys)
        if len(hit):
            positions = hit.tolist()
            for i, record in zip(positions, self._records([keys[i] for i in positions], rows[hit])):
                out[i] = record
        for i in overlaid:
            found = self.overlay[keys[i]]
            out[i] = None if found is None else dict(found)
        return out

    def get_table(self, keys: Iterable[Any]) -> pa.Table:
        """The records for ``keys`` as a pyarrow Table in the order of ``keys``; absent keys are left out.

        No Python object per value: the fastest way to fetch many records
        (JSON columns stay JSON text, as in ``table``).
        """
        keys = keys if isinstance(keys, list) else list(keys)
        keys, rows, overlaid = self._locate(keys)
        hit = np.flatnonzero(rows >= 0)
        found = conform(self.base.table.take(pa.array(rows[hit], pa.int64())), self.schema)
        if not overlaid:
            return found
        changed = [(i, self.overlay[keys[i]]) for i in overlaid]
        kept = [(i, _encode_json(row, self.schema)) for i, row in changed if row is not None]
        extra = pa.Table.from_pylist([row for _, row in kept], schema=self.schema.to_arrow())
        positions = np.concatenate([hit, np.array([i for i, _ in kept], np.int64)])
        return pa.concat_tables([found, extra]).take(pa.array(np.argsort(positions, kind="stable")))

    def _locate(self, keys: list[Any]) -> tuple[list[Any], np.ndarray, list[int]]:
        """The keys coerced, their base rows (-1: absent or overridden) and the positions the overlay answers."""
        keys, array = self._key_array(keys)
        rows = self.base.find_many(keys, array)
        overlaid: list[int] = []
        if self.overlay:
            in_overlay = pc.is_in(array, value_set=self._overlay_keys).to_numpy(zero_copy_only=False)
            if in_overlay.any():
                rows[in_overlay] = -1
                overlaid = np.flatnonzero(in_overlay).tolist()
        return keys, rows, overlaid

    def _key_array(self, keys: list[Any]) -> tuple[list[Any], pa.Array]:
        """The keys coerced to the key type, and as an Arrow array."""
        exact = {"string": str, "int64": int}.get(self.schema.key_type)
        arrow = pa.string() if self.schema.key_stored == "string" else pa.int64()
        if exact is not None and set(map(type, keys)) == {exact}:
            try:
                return keys, pa.array(keys, arrow)
            except OverflowError:
                pass  # an int beyond int64: lookup_key below names it
        keys = [lookup_key(key, self.schema.key_type) for key in keys]
        return keys, pa.array(keys, arrow)

    def _records(self, keys: list[Any], rows: np.ndarray) -> list[Record]:
        """The base's records at ``rows`` (whose keys are ``keys``), built columnwise."""
        indices = pa.array(rows, pa.int64())
        columns = [reader.values(rows, indices) for reader in self._readers]
        return self._build(keys, columns)

    def records_at(self, rows: np.ndarray) -> list[Record]:
        """The base's records at ``rows``; the caller makes sure none is overridden by the overlay."""
        return self._records(self.base.keys.take(pa.array(rows, pa.int64())).to_pylist(), rows)

    # -- indexes -------------------------------------------------------------------

    @functools.cached_property
    def replaced_rows(self) -> np.ndarray:
        """The base's rows whose keys the overlay changed or removed, sorted (indexes leave them out)."""
        if not self.overlay:
            return np.zeros(0, np.int64)
        rows = self.base.find_many(list(self.overlay), self._overlay_keys)
        return np.sort(rows[rows >= 0])

    def index(self, fields: str | tuple[str, ...]) -> Index:
        """A hash index on ``fields`` (one name, or a tuple for a compound index), built on first use.

        ``index(f).get(value)`` lists the records whose ``f`` equals ``value``;
        ``index(f).range(lo, hi)`` lists those with ``lo <= f < hi`` in ``f`` order.
        """
        names = normalize_fields(fields)
        missing = [n for n in names if n != self.schema.key_field and n not in self.schema.columns]
        if missing:
            raise ConfigError(f"cannot index {', '.join(map(repr, missing))}: {self.manifest.dataset} version "
                              f"{self.version} has no such column (columns: {', '.join(self.schema.columns)})")
        # Cached without the Index itself, which refers to this View: no cycle keeps a View alive.
        found = self._indexes.get(names)
        if found is None:
            with self._lock:
                found = self._indexes.get(names)
                if found is None:
                    shared = base_index(self.base, names)
                    part = OverlayPart(self.overlay, shared, self.replaced_rows, field_kinds(self.schema, names))
                    found = self._indexes[names] = (shared, part)
        return Index(self, *found)

    # -- the whole table -----------------------------------------------------------

    @property
    def table(self) -> pa.Table:
        """The whole version as a pyarrow Table sorted by key; zero-copy over the snapshot when no delta applies.

        With deltas it is built once, on first use, and kept.
        """
        if not self.overlay:
            return conform(self.base.table, self.schema)
        with self._lock:
            if self._table is None:
                self._table = self._materialize()
            return self._table

    def _materialize(self) -> pa.Table:
        key_field = self.schema.key_field
        kept = self.base.table.filter(pc.invert(pc.is_in(self.base.table.column(key_field),
                                                         value_set=self._overlay_keys)))
        rows = [_encode_json(row, self.schema) for row in self.overlay.values() if row is not None]
        changed = pa.Table.from_pylist(rows, schema=self.schema.to_arrow())
        merged = pa.concat_tables([conform(kept, self.schema), changed])
        return merged.sort_by(key_field).combine_chunks() if merged.num_rows else merged

    # -- moving on -------------------------------------------------------------------

    def _overlay_for(self, schema: Schema) -> Overlay:
        """A copy of the overlay whose rows have ``schema``'s columns (new ones None) in its order and types."""
        if list(schema.columns.items()) == list(self.schema.columns.items()):  # same names, order and types
            return dict(self.overlay)
        return {key: None if row is None else conform_record(row, schema) for key, row in self.overlay.items()}

    def with_manifest(self, manifest: Manifest) -> View:
        """The same rows under ``manifest`` (a shard read with its sharded dataset's columns); this one is unchanged."""
        return View(manifest, self.base, self.base_version, self._overlay_for(project(manifest.schema, self.columns)),
                    columns=self.columns, deltas_applied=self.deltas_applied, chain_bytes=self.chain_bytes)

    def with_delta(self, manifest: Manifest, delta: pa.Table, nbytes: int = 0) -> View:
        """A new View one step on (a forward delta) or back (a reverse delta); this one is unchanged."""
        schema = project(manifest.schema, self.columns)
        _check_evolution(self.schema, schema, forward=manifest.version > self.version, dataset=manifest.dataset,
                         versions=(self.version, manifest.version))
        key_field = schema.key_field
        names = [key_field, *schema.columns]
        overlay = self._overlay_for(schema)  # a schema change gives every kept row the new columns and types
        # Column by column: one conversion per column, then one dict per changed row. A delta of a newer
        # schema (a reverse delta leads back to an older one) is read in this View's schema first.
        ops = delta.column(OP_COLUMN).to_pylist()
        raw, delta = delta, conform(delta, schema).combine_chunks()
        types = [schema.key_stored, *schema.columns.values()]
        columns = [python_values(delta.column(n).chunk(0), t) if delta.num_rows else [] for n, t in zip(names, types)]
        count = self._count_after(manifest, raw, columns[0])
        for op, key, values in zip(ops, columns[0], zip(*columns)):
            overlay[key] = None if op == REMOVED else dict(zip(names, values))
        return View(manifest, self.base, self.base_version, overlay, columns=self.columns,
                    deltas_applied=self.deltas_applied + 1, chain_bytes=self.chain_bytes + nbytes, count=count)

    def _count_after(self, manifest: Manifest, delta: pa.Table, keys: list[Any]) -> int:
        """The records after ``delta``; IntegrityError unless it fits this View (additions new, the rest present)."""
        ops = delta.column(OP_COLUMN).to_numpy()
        present = self._present(keys, delta.column(0).combine_chunks())
        fits = np.isin(ops, (ADDED, UPDATED, REMOVED)) & np.where(ops == ADDED, ~present, present)
        if not fits.all():
            raise IntegrityError(f"{manifest.dataset}: the delta to version {manifest.version} does not fit version "
                                 f"{self.version}: it adds keys that exist or updates or removes keys that do not")
        return self.count - int(present.sum()) + int((ops != REMOVED).sum())

    def _present(self, keys: list[Any], array: pa.Array) -> np.ndarray:
        """Whether each of ``keys`` (``array`` holds the same keys) has a record in this View."""
        present: np.ndarray = self.base.find_many(keys, array) >= 0
        if self.overlay:
            overlaid = pc.is_in(array, value_set=self._overlay_keys).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(overlaid).tolist():
                present[i] = self.overlay[keys[i]] is not None
        return present


def _check_evolution(old: Schema, new: Schema, *, forward: bool, dataset: str, versions: tuple[int, int]) -> None:
    """Refuse a delta across a type change the format does not allow (docs/FORMAT.md, "Schema evolution")."""
    for name, kind in new.columns.items():
        before = old.columns.get(name)
        if before is not None and not (grows(before, kind) if forward else grows(kind, before)):
            raise FormatError(f"{dataset}: column {name!r} is {before} at version {versions[0]} and {kind} at "
                              f"version {versions[1]}; a delta cannot carry that change (a schema-change version "
                              "has a snapshot and no deltas)")


def _encode_json(row: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """Back to the stored form: nested values as JSON text."""
    out = dict(row)
    for name, kind in schema.columns.items():
        if kind == "json" and out.get(name) is not None:
            out[name] = json_text(out[name])
    return out
