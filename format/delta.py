"""Deltas: the rows one version changes, as a table, and how to apply them.

A delta table has the key column, every value column, and an int8
``__combe_op`` column: 1 added, 2 updated (full new row), 3 removed (values
null). Rows are sorted by key. A reverse delta has the same shape and undoes
its forward delta: removals become additions with the old values, and so on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import IntegrityError
from .schema import Schema, conform

OP_COLUMN = "__combe_op"
ADDED, UPDATED, REMOVED = 1, 2, 3
OP_NAMES = {ADDED: "added", UPDATED: "updated", REMOVED: "removed"}  # as the API and the CLI say them


def delta_schema(schema: Schema) -> pa.Schema:
    return schema.to_arrow().append(pa.field(OP_COLUMN, pa.int8(), nullable=False))


def make_delta(rows: pa.Table, ops: list[int], schema: Schema) -> pa.Table:
    """A delta from changed rows (removed rows carry nulls) and their ops, sorted by key."""
    table = conform(rows, schema).append_column(
        pa.field(OP_COLUMN, pa.int8(), nullable=False), pa.array(ops, pa.int8()))
    return table.sort_by(schema.key_field) if table.num_rows else table


def touched(deltas: Sequence[pa.Table], schema: Schema) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Deltas in order, as one table in ``schema`` with their ops; and for every key they touch, the row
    (in that table) of the first delta and of the last delta that touch it, key by key in the same order.

    ``schema`` must hold every delta's columns with the same types, or null ones (a later version's).
    """
    parts = [conform(delta, schema).append_column(OP_COLUMN, delta.column(OP_COLUMN)) for delta in deltas]
    rows = pa.concat_tables(parts) if parts else pa.Table.from_batches([], delta_schema(schema))
    order = pa.array(np.arange(rows.num_rows, dtype=np.int64))
    grouped = pa.table({"key": rows.column(schema.key_field), "order": order}).group_by(
        "key", use_threads=False).aggregate([("order", "min"), ("order", "max")])
    return rows, grouped.column("order_min").to_numpy(), grouped.column("order_max").to_numpy()


def apply_deltas(state: pa.Table, deltas: Sequence[pa.Table], schema: Schema, *, what: str = "delta") -> pa.Table:
    """``state`` with ``deltas`` applied in order, sorted by key, in ``schema``'s columns (the last delta's).

    All at once: each key takes its row in the last delta that touches it, so
    the state is filtered, joined and sorted once, not once per delta. Checks
    that the deltas fit the state (a key's first delta adds it only if it is
    absent, updates or removes it only if it is present): a delta that does
    not is an IntegrityError.
    """
    key = schema.key_field
    rows, first, last = touched(deltas, schema)
    if not rows.num_rows:
        return conform(state, schema)
    keys = rows.column(key).take(pa.array(last))
    present = pc.is_in(keys, value_set=state.column(key).combine_chunks()).to_numpy(zero_copy_only=False)
    if not np.array_equal(present, rows.column(OP_COLUMN).to_numpy()[first] != ADDED):
        raise IntegrityError(f"{what} does not fit the state it applies to: it adds keys that exist "
                             "or updates/removes keys that do not")
    kept = state.filter(pc.invert(pc.is_in(state.column(key), value_set=keys)))
    final = rows.take(pa.array(last))
    upserts = final.filter(pc.not_equal(final.column(OP_COLUMN), REMOVED)).drop_columns([OP_COLUMN])
    merged = pa.concat_tables([conform(kept, schema), upserts])
    return merged.sort_by(key).combine_chunks() if merged.num_rows else merged


def apply_delta(state: pa.Table, delta: pa.Table, schema: Schema, *, what: str = "delta") -> pa.Table:
    """``state`` with one ``delta`` applied (see apply_deltas)."""
    return apply_deltas(state, [delta], schema, what=what)
