"""Deltas: the rows one version changes, as a table, and how to apply one.

A delta table has the key column, every value column, and an int8
``__combe_op`` column: 1 added, 2 updated (full new row), 3 removed (values
null). Rows are sorted by key. A reverse delta has the same shape and undoes
its forward delta: removals become additions with the old values, and so on.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .errors import IntegrityError
from .schema import Schema, conform

OP_COLUMN = "__combe_op"
ADDED, UPDATED, REMOVED = 1, 2, 3


def delta_schema(schema: Schema) -> pa.Schema:
    return schema.to_arrow().append(pa.field(OP_COLUMN, pa.int8(), nullable=False))


def make_delta(rows: pa.Table, ops: list[int], schema: Schema) -> pa.Table:
    """A delta from changed rows (removed rows carry nulls) and their ops, sorted by key."""
    table = conform(rows, schema).append_column(
        pa.field(OP_COLUMN, pa.int8(), nullable=False), pa.array(ops, pa.int8()))
    return table.sort_by(schema.key_field) if table.num_rows else table


def apply_delta(state: pa.Table, delta: pa.Table, schema: Schema, *, what: str = "delta") -> pa.Table:
    """``state`` with ``delta`` applied, sorted by key, in ``schema``'s columns.

    Checks that the delta fits the state (additions are new keys, updates and
    removals existing ones): a delta that does not is an IntegrityError.
    """
    key = schema.key_field
    ops = delta.column(OP_COLUMN)
    touched = delta.column(key)
    present = pc.is_in(touched, value_set=state.column(key).combine_chunks())
    expected_present = pc.not_equal(ops, ADDED)
    if not pc.all(pc.equal(present, expected_present)).as_py() and delta.num_rows:
        raise IntegrityError(f"{what} does not fit the state it applies to: it adds keys that exist "
                             "or updates/removes keys that do not")
    kept = state.filter(pc.invert(pc.is_in(state.column(key), value_set=touched.combine_chunks())))
    upserts = delta.filter(pc.not_equal(ops, REMOVED)).drop_columns([OP_COLUMN])
    merged = pa.concat_tables([conform(kept, schema), conform(upserts, schema)])
    return merged.sort_by(key).combine_chunks() if merged.num_rows else merged
