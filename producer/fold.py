"""The fold: previous state + ordered changes -> new state, delta, reverse delta, counts.

Pure: no store, no source. ``Changes`` collects the latest value per key in
the order records arrive (later offsets win) and grows the schema; ``fold``
compares those values with the previous state, so a record that leaves a
value as it was is not a change, and builds the tables a version needs.

Per-record Python work is kept to a dict store and, for each distinct record
*shape* (field names and value types), one schema check; the comparison with
the previous state and the delta tables are built column by column in Arrow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from combe.format.delta import ADDED, OP_COLUMN, REMOVED, UPDATED, apply_delta
from combe.format.jsontext import json_text
from combe.format.schema import INT64_MAX, INT64_MIN, PY_TYPES, RESERVED_PREFIX, Schema, conform, fits, widen

_NO_FIELDS: dict[str, Any] = {}


class Changes:
    """The latest value per key seen in this cycle, and the schema those values need.

    ``held`` names the columns already published: their types are fixed, while
    a column first seen in this cycle may still widen (null -> any, int -> float).
    """

    def __init__(self, schema: Schema, held: set[str], *, allow_type_change: bool = False) -> None:
        self.schema = schema
        self.held = held
        self.latest: dict[str | int, dict[str, Any] | None] = {}
        # --allow-schema-change: a held column whose type a value conflicts with takes the value's
        # type; name -> its type before. Its values are converted by producer.evolution before the fold.
        self.allow_type_change = allow_type_change
        self.retyped: dict[str, str] = {}
        # shape -> positions of its int values (range-checked per record). A shape
        # that fitted the schema keeps fitting: columns only ever widen.
        self._shapes: dict[tuple[tuple[str, ...], tuple[type, ...]], tuple[int, ...]] = {}

    def add(self, key: str | int, row: dict[str, Any] | None) -> None:
        """Record one change; ValueError (nothing recorded) if its values do not fit the schema."""
        if row is not None:
            shape = (tuple(row), tuple(map(type, row.values())))
            int_positions = self._shapes.get(shape)
            if int_positions is None:
                int_positions = self._check_shape(row)
                self._shapes[shape] = int_positions
            if int_positions:
                values = tuple(row.values())
                for position in int_positions:
                    if not INT64_MIN <= values[position] <= INT64_MAX:
                        name = shape[0][position]
                        raise ValueError(f"field {name!r} value {values[position]} does not fit in int64")
        self.latest[key] = row

    def _check_shape(self, row: dict[str, Any]) -> tuple[int, ...]:
        columns = self.schema.columns
        updates: dict[str, str] = {}
        retyped: dict[str, str] = {}
        int_positions = []
        for position, (name, value) in enumerate(row.items()):
            if name.startswith(RESERVED_PREFIX):
                raise ValueError(f"field {name!r} uses the reserved prefix {RESERVED_PREFIX}")
            kind = PY_TYPES.get(type(value))
            if kind is None:
                raise ValueError(f"field {name!r} has a value of unsupported type {type(value).__name__}")
            if kind == "int64":
                int_positions.append(position)
            current = columns.get(name)
            if current is None:
                updates[name] = kind
            elif not fits(current, kind) and name not in self.retyped:
                widened = widen(current, kind) if (name not in self.held or current == "null") else None
                if widened is None and self.allow_type_change and name in self.held:
                    retyped[name], widened = current, kind
                if widened is None:
                    raise ValueError(f"type conflict: field {name!r} is {current} in the dataset but this "
                                     f"value is {kind} ({value!r:.40}); allow_schema_change publishes "
                                     "the new type as a snapshot-only version")
                updates[name] = widened
        # Applied only once every field passed, so a bad record leaves the schema as it was.
        columns.update(updates)
        self.retyped.update(retyped)
        return tuple(int_positions)


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


def _column(rows: list[dict[str, Any]], name: str, kind: str, arrow_type: pa.DataType) -> pa.Array:
    """One column of the new rows, as the state stores it (nested values as canonical JSON text)."""
    if kind == "json":
        values = [None if (v := row.get(name)) is None else json_text(v) for row in rows]
    else:
        values = [row.get(name) for row in rows]
    return pa.array(values, arrow_type)


def _rows_table(keys: list[str | int], values: list[dict[str, Any] | None], schema: Schema) -> pa.Table:
    arrow_schema = schema.to_arrow()
    rows = [_NO_FIELDS if value is None else value for value in values]
    columns = [pa.array(keys, arrow_schema.field(schema.key_field).type)]
    columns += [_column(rows, name, kind, arrow_schema.field(name).type) for name, kind in schema.columns.items()]
    return pa.Table.from_arrays(columns, schema=arrow_schema)


def _rows_equal(new: pa.Table, old: pa.Table, schema: Schema) -> pa.Array:
    """Per row: every value column equal, two nulls counting as equal."""
    equal = pa.array([True] * new.num_rows, pa.bool_())
    for name in schema.columns:
        a, b = new.column(name), old.column(name)
        same = pc.or_(pc.and_(a.is_null(), b.is_null()), pc.fill_null(pc.equal(a, b), False)) \
            if a.type != pa.null() else pa.array([True] * new.num_rows, pa.bool_())
        equal = pc.and_(equal, same)
    return equal


def _with_op(table: pa.Table, op: int) -> pa.Table:
    return table.append_column(pa.field(OP_COLUMN, pa.int8(), nullable=False),
                               pa.array([op] * table.num_rows, pa.int8()))


def _removed_rows(table: pa.Table, schema: Schema) -> pa.Table:
    """Just the keys of ``table``, with null values: how a delta says "removed"."""
    return conform(table.select([schema.key_field]), schema)


def _delta(parts: list[tuple[pa.Table, int]], schema: Schema) -> pa.Table:
    table = pa.concat_tables([_with_op(part, op) for part, op in parts])
    return table.sort_by(schema.key_field).combine_chunks()


def fold(previous: pa.Table, changes: Changes) -> FoldResult:
    """Compare the collected changes with ``previous`` and build the new version's tables."""
    schema = changes.schema
    key_field = schema.key_field
    previous = conform(previous, schema)
    keys = list(changes.latest)
    values = list(changes.latest.values())
    new = _rows_table(keys, values, schema)
    positions = pc.index_in(new.column(key_field), value_set=previous.column(key_field).combine_chunks())
    old = previous.take(positions)  # null rows where the key is new
    present = positions.is_valid()
    deleted = pa.array([value is None for value in values], pa.bool_())
    kept = pc.invert(deleted)
    added_mask = pc.and_(pc.invert(present), kept)
    removed_mask = pc.and_(present, deleted)
    updated_mask = pc.and_(pc.and_(present, kept), pc.invert(_rows_equal(new, old, schema)))

    added, updated, removed = new.filter(added_mask), new.filter(updated_mask), new.filter(removed_mask)
    delta = _delta([(added, ADDED), (updated, UPDATED), (_removed_rows(removed, schema), REMOVED)], schema)
    reverse = _delta([(_removed_rows(added, schema), REMOVED), (old.filter(updated_mask), UPDATED),
                      (old.filter(removed_mask), ADDED)], schema)
    state = apply_delta(previous, delta, schema) if delta.num_rows else previous
    changed = added.num_rows + updated.num_rows + removed.num_rows
    return FoldResult(
        state=state, delta=delta, reverse=reverse, schema=schema,
        added=added.num_rows, updated=updated.num_rows, removed=removed.num_rows,
        unchanged=len(keys) - changed,
    )
