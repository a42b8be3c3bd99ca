"""Column types, schema inference from JSON values, and the held schema.

The schema is inferred on the first publish and then held: a new field adds a
nullable column, a field that stops appearing stays (as nulls), and a value
whose type does not fit its column is a bad record. Types are a small closed
set so that a snapshot can be read from any language (docs/FORMAT.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from .errors import ConfigError, FormatError
from .types import arrow_field, parse_type

KEY_TYPES = ("string", "int64")
VALUE_FORMATS = ("json", "string", "bytes")
RESERVED_PREFIX = "__combe_"
# Python type of a decoded JSON value -> combe type. bool before int matters:
# the lookup is by exact type, so True maps to "bool", never "int64".
PY_TYPES: dict[type, str] = {
    type(None): "null",
    bool: "bool",
    int: "int64",
    float: "float64",
    str: "string",
    list: "json",
    dict: "json",
    bytes: "binary",
}

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def fits(column_type: str, value_type: str) -> bool:
    """Whether a value of ``value_type`` can be stored in a ``column_type`` column as is."""
    return (
        value_type == column_type
        or value_type == "null"
        or (column_type == "float64" and value_type == "int64")
    )


def widen(column_type: str, value_type: str) -> str | None:
    """The type a column still being inferred becomes on seeing ``value_type``; None if it cannot."""
    if fits(column_type, value_type):
        return column_type
    if column_type == "null":
        return value_type
    if column_type == "int64" and value_type == "float64":
        return "float64"
    return None


@dataclass
class Schema:
    """The key column and the value columns, in order; the key column comes first."""

    key_field: str
    key_type: str
    columns: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.key_type not in KEY_TYPES:
            raise ConfigError(f"key type {self.key_type!r} is not one of {', '.join(KEY_TYPES)}")
        if not self.key_field or self.key_field.startswith(RESERVED_PREFIX):
            raise ConfigError(f"key field {self.key_field!r} is empty or uses the reserved prefix {RESERVED_PREFIX}")

    def copy(self) -> Schema:
        return Schema(self.key_field, self.key_type, dict(self.columns))

    def to_arrow(self) -> pa.Schema:
        fields = [arrow_field(self.key_field, self.key_type, nullable=False)]
        fields += [arrow_field(name, kind) for name, kind in self.columns.items()]
        return pa.schema(fields)

    def to_json(self) -> list[dict[str, str]]:
        return [{"name": self.key_field, "type": self.key_type}] + [
            {"name": name, "type": kind} for name, kind in self.columns.items()
        ]

    @classmethod
    def from_json(cls, key_field: str, key_type: str, columns: list[dict[str, str]]) -> Schema:
        # Entries are checked to be objects first: a manifest is untrusted input.
        pairs = [(c.get("name"), c.get("type")) if isinstance(c, dict) else (None, None) for c in columns]
        if not pairs or pairs[0] != (key_field, key_type):
            raise FormatError(f"schema must start with the key column {key_field!r} of type {key_type}")
        values: dict[str, str] = {}
        for column, (name, kind) in zip(columns[1:], pairs[1:]):
            if (not isinstance(name, str) or not isinstance(kind, str) or name in values or name == key_field
                    or name.startswith(RESERVED_PREFIX)):
                raise FormatError(f"schema column {column!r:.200} is not a unique name with a type")
            values[name] = parse_type(kind)
        return cls(key_field, key_type, values)

    def empty_table(self) -> pa.Table:
        return self.to_arrow().empty_table()


def conform(table: pa.Table, schema: Schema) -> pa.Table:
    """``table`` with the columns of ``schema``: missing ones added as nulls, null-typed ones cast."""
    target = schema.to_arrow()
    columns = []
    for arrow in target:
        if arrow.name in table.column_names:
            column = table.column(arrow.name)
            if column.type != arrow.type and arrow.type == pa.null():
                # Back to a version where the column was all null: Arrow casts nothing to null.
                if column.null_count != len(column):
                    raise FormatError(f"column {arrow.name!r} holds values, but the schema has it all null")
                column = pa.nulls(len(column))
            columns.append(column if column.type == arrow.type else column.cast(arrow.type))
        else:
            columns.append(pa.nulls(table.num_rows, arrow.type))
    return pa.Table.from_arrays(columns, schema=target)
