"""Type changes allowed by ``--allow-schema-change``: converting a column's values to its new type.

A delta cannot carry a type change (its rows are in one schema, applied over
a snapshot in another), so a version that changes a column's type is
published as a snapshot only. The values that column already holds, and
values of another type still arriving in the same cycle, are converted where
the conversion is exact and become null where it is not:

=========  ================================================================
new type   converted from
=========  ================================================================
float64    integers; decimal text such as "12.5"
int64      floats without a fraction; decimal integer text such as "12"
string     numbers and booleans as their JSON text; nested values as JSON text
json       any value
bool       the text "true" or "false"
=========  ================================================================
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

import pyarrow as pa

from combe.format.jsontext import json_text
from combe.format.keys import INT64_MAX, INT64_MIN
from combe.format.schema import Schema
from combe.format.types import arrow_field, arrow_type

from .shapes import unify, value_type

log = logging.getLogger(__name__)

_INTEGER_TEXT = re.compile(r"^\s*[-+]?\d+\s*$")


def _fits(value: Any, kind: str) -> bool:
    """Whether a nested value already has a shape ``kind`` holds as is."""
    try:
        return unify(kind, value_type(value), kind) == kind
    except ValueError:
        return False


def convert_value(value: Any, kind: str) -> Any:
    """``value`` (as decoded from JSON) as a value of combe type ``kind``; None when it has no exact one."""
    if value is None or kind == "json":
        return value
    if kind == "string":
        return value if isinstance(value, str) else json_text(value)
    if isinstance(value, bool):
        return value if kind == "bool" else None
    if kind == "bool":
        return {"true": True, "false": False}.get(value) if isinstance(value, str) else None
    if kind == "int64":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and _INTEGER_TEXT.match(value):
            value = int(value)
        return value if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX else None
    if "<" in kind:
        return value if _fits(value, kind) else None
    if kind == "float64":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    return value if kind == "binary" and isinstance(value, bytes) else None


def convert_column(column: pa.ChunkedArray, kind: str) -> pa.ChunkedArray:
    """A column of values collected this cycle in another type, converted to ``kind`` (a column changing type).

    They arrived before the first value of the new type, or after it still in
    the old one; either way they are treated like the values already published.
    """
    values = [convert_value(v, kind) for v in column.to_pylist()]
    if kind == "json":
        values = [None if v is None else json_text(v) for v in values]
    return pa.chunked_array([pa.array(values, arrow_type(kind))], arrow_type(kind))


def retype_state(state: pa.Table, retyped: dict[str, str], schema: Schema) -> pa.Table:
    """``state`` with each column of ``retyped`` (name -> old type) converted to its type in ``schema``.

    Runs once per type change, so a Python pass over the column is fine.
    """
    for name, old in retyped.items():
        if name not in state.column_names:
            continue
        new = schema.columns[name]
        values = state.column(name).to_pylist()
        if old == "json":
            values = [None if v is None else json.loads(v) for v in values]
        converted = [convert_value(v, new) for v in values]
        lost = sum(1 for before, after in zip(values, converted) if before is not None and after is None)
        if new == "json":
            converted = [None if v is None else json_text(v) for v in converted]
        index = state.column_names.index(name)
        state = state.set_column(index, arrow_field(name, new), pa.array(converted, arrow_field(name, new).type))
        log.warning("column %r changes type from %s to %s: %d values converted, %d without an exact %s "
                    "value became null", name, old, new, len(values) - lost - values.count(None), lost, new)
    return state
