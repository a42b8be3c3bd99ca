"""The fold: previous state + ordered changes -> new state, delta, reverse delta, counts.

Pure: no store, no source. ``Changes`` collects the latest value per key in
the order records arrive (later offsets win) and grows the schema; ``fold``
compares those values with the previous state, so a record that leaves a
value as it was is not a change, and builds the tables a version needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from combe.format.delta import ADDED, REMOVED, UPDATED, apply_delta, make_delta
from combe.format.schema import INT64_MAX, INT64_MIN, PY_TYPES, Schema, conform, fits, json_text, widen


class Changes:
    """The latest value per key seen in this cycle, and the schema those values need.

    ``held`` names the columns already published: their types are fixed, while
    a column first seen in this cycle may still widen (null -> any, int -> float).
    """

    def __init__(self, schema: Schema, held: set[str]) -> None:
        self.schema = schema
        self.held = held
        self.latest: dict[str | int, dict[str, Any] | None] = {}

    def add(self, key: str | int, row: dict[str, Any] | None) -> None:
        """Record one change; ValueError (nothing recorded) if its values do not fit the schema."""
        if row is not None:
            self._check_types(row)
        self.latest[key] = row

    def _check_types(self, row: dict[str, Any]) -> None:
        columns = self.schema.columns
        updates: dict[str, str] = {}
        for name, value in row.items():
            kind = PY_TYPES.get(type(value))
            if kind is None:
                raise ValueError(f"field {name!r} has a value of unsupported type {type(value).__name__}")
            if kind == "int64" and not INT64_MIN <= value <= INT64_MAX:
                raise ValueError(f"field {name!r} value {value} does not fit in int64")
            current = columns.get(name)
            if current is None:
                updates[name] = kind
            elif not fits(current, kind):
                widened = widen(current, kind) if (name not in self.held or current == "null") else None
                if widened is None:
                    raise ValueError(f"type conflict: field {name!r} is {current} in the dataset but this "
                                     f"value is {kind} ({value!r:.40})")
                updates[name] = widened
        # Applied only once every field passed, so a bad record leaves the schema as it was.
        columns.update(updates)


@dataclass
class FoldResult:
    state: pa.Table
    delta: pa.Table
    reverse: pa.Table
    schema: Schema
    added: int
    updated: int
    removed: int
    unchanged: int

    @property
    def changed(self) -> int:
        return self.added + self.updated + self.removed


def _normalize(row: dict[str, Any], key_field: str, key: str | int, schema: Schema) -> dict[str, Any]:
    """The row as the state stores it: every column, nested values as canonical JSON text."""
    out: dict[str, Any] = {key_field: key}
    for name, kind in schema.columns.items():
        value = row.get(name)
        if kind == "json" and value is not None:
            value = json_text(value)
        elif kind == "float64" and value is not None:
            value = float(value)
        out[name] = value
    return out


def fold(previous: pa.Table, changes: Changes) -> FoldResult:
    """Compare the collected changes with ``previous`` and build the new version's tables."""
    schema = changes.schema
    key_field = schema.key_field
    previous = conform(previous, schema)
    keys = list(changes.latest)
    key_array = pa.array(keys, schema.to_arrow().field(key_field).type)
    rows_in_previous = pc.index_in(key_array, value_set=previous.column(key_field).combine_chunks())
    present = rows_in_previous.drop_null()
    old_rows = iter(previous.take(present).to_pylist())

    forward: list[dict[str, Any]] = []
    forward_ops: list[int] = []
    backward: list[dict[str, Any]] = []
    backward_ops: list[int] = []
    unchanged = 0
    for key, position in zip(keys, rows_in_previous.to_pylist()):
        old = next(old_rows) if position is not None else None
        value = changes.latest[key]
        new = None if value is None else _normalize(value, key_field, key, schema)
        if new == old:
            unchanged += 1
        elif old is None:
            forward.append(new)  # type: ignore[arg-type]
            forward_ops.append(ADDED)
            backward.append({key_field: key})
            backward_ops.append(REMOVED)
        elif new is None:
            forward.append({key_field: key})
            forward_ops.append(REMOVED)
            backward.append(old)
            backward_ops.append(ADDED)
        else:
            forward.append(new)
            forward_ops.append(UPDATED)
            backward.append(old)
            backward_ops.append(UPDATED)

    arrow_schema = schema.to_arrow()
    delta = make_delta(pa.Table.from_pylist(forward, schema=arrow_schema), forward_ops, schema)
    reverse = make_delta(pa.Table.from_pylist(backward, schema=arrow_schema), backward_ops, schema)
    state = apply_delta(previous, delta, schema) if delta.num_rows else previous
    return FoldResult(
        state=state, delta=delta, reverse=reverse, schema=schema,
        added=forward_ops.count(ADDED), updated=forward_ops.count(UPDATED),
        removed=forward_ops.count(REMOVED), unchanged=unchanged,
    )
