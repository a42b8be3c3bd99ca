"""One immutable version of a dataset, as readers see it.

A View is a snapshot (``Base``) plus an overlay of the rows that deltas since
that snapshot changed. Applying a delta copies the small overlay and leaves
the snapshot's columns and index untouched, so a refresh costs what the
delta holds, not what the dataset holds. Nothing in a View changes after it
is built; the Consumer swaps whole Views.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from combe.format.delta import OP_COLUMN, REMOVED
from combe.format.errors import KeyTypeError
from combe.format.manifest import Manifest
from combe.format.schema import Schema, conform, json_text

from .base import Base


def coerce_key(key: Any, key_type: str) -> str | int:
    """The key as the dataset stores it; digits are accepted for int64 keys (URLs, CLIs)."""
    if key_type == "string":
        if isinstance(key, str):
            return key
        raise KeyTypeError(f"key {key!r} is a {type(key).__name__}; this dataset's keys are strings")
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    raise KeyTypeError(f"key {key!r} is not an integer; this dataset's keys are int64")


class View:
    """A whole version: ``get``, ``get_many``, ``table``, ``version``. Safe to share between threads."""

    def __init__(self, manifest: Manifest, base: Base, base_version: int,
                 overlay: dict[str | int, dict[str, Any] | None] | None = None) -> None:
        self.manifest = manifest
        self.version = manifest.version
        self.schema: Schema = manifest.schema
        self.base = base
        self.base_version = base_version
        self.overlay = overlay or {}
        self.deltas_applied = 0
        self._read = base.row_reader(self.schema)
        self._table: pa.Table | None = None
        self._table_lock = threading.Lock()

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to release: holding the View keeps its version alive, and that is all."""

    def __len__(self) -> int:
        return self.manifest.record_count

    def __repr__(self) -> str:
        return f"<View {self.manifest.dataset} version {self.version}: {len(self)} records>"

    def get(self, key: Any) -> dict[str, Any] | None:
        """The record with ``key`` as a new dict, or None."""
        key = coerce_key(key, self.schema.key_type)
        overlay = self.overlay
        if overlay and key in overlay:
            found = overlay[key]
            return dict(found) if found is not None else None
        row = self.base.find(key)
        return self._read(key, row) if row >= 0 else None

    def get_many(self, keys: Iterable[Any]) -> list[dict[str, Any] | None]:
        """Records for ``keys``, in order, None where absent."""
        return [self.get(key) for key in keys]

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    @property
    def table(self) -> pa.Table:
        """The whole version as a pyarrow Table sorted by key (built once, on first use, if deltas apply)."""
        if not self.overlay:
            return conform(self.base.table, self.schema)
        with self._table_lock:
            if self._table is None:
                self._table = self._materialize()
            return self._table

    def _materialize(self) -> pa.Table:
        key_field = self.schema.key_field
        key_type = self.schema.to_arrow().field(key_field).type
        touched = pa.array(list(self.overlay), key_type)
        kept = self.base.table.filter(pc.invert(pc.is_in(self.base.table.column(key_field), value_set=touched)))
        rows = [_encode_json(row, self.schema) for row in self.overlay.values() if row is not None]
        changed = pa.Table.from_pylist(rows, schema=self.schema.to_arrow())
        merged = pa.concat_tables([conform(kept, self.schema), changed])
        return merged.sort_by(key_field).combine_chunks() if merged.num_rows else merged

    def with_delta(self, manifest: Manifest, delta: pa.Table) -> View:
        """A new View one step on (a forward delta) or back (a reverse delta); this one is unchanged."""
        overlay = dict(self.overlay)
        schema = manifest.schema
        json_columns = [name for name, kind in schema.columns.items() if kind == "json"]
        key_field = schema.key_field
        names = [key_field, *schema.columns]
        ops = delta.column(OP_COLUMN).to_pylist()
        for op, row in zip(ops, delta.select([n for n in names if n in delta.column_names]).to_pylist()):
            key = row[key_field]
            if op == REMOVED:
                overlay[key] = None
                continue
            for name in json_columns:
                if row.get(name) is not None:
                    row[name] = json.loads(row[name])
            overlay[key] = {name: row.get(name) for name in names}
        view = View(manifest, self.base, self.base_version, overlay)
        view.deltas_applied = self.deltas_applied + 1
        return view


def _encode_json(row: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """Back to the stored form: nested values as JSON text."""
    out = dict(row)
    for name, kind in schema.columns.items():
        if kind == "json" and out.get(name) is not None:
            out[name] = json_text(out[name])
    return out
