"""Column types, schema inference from JSON values, and the held schema.

The schema is inferred on the first publish and then held: a new field adds a
nullable column, a field that stops appearing stays (as nulls), and a value
whose type does not fit its column is a bad record. Types are a small closed
set so that a snapshot can be read from any language (docs/FORMAT.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConfigError, FormatError
from .keys import check_key_type, stored_type
from .types import (arrow_field, arrow_type, list_item, map_types, parse_type, struct_fields, type_of_arrow,
                    type_of_field)
from .types import kind as kind_of

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
    """The key column and the value columns, in order; the key column comes first.

    ``key_type`` is the declared one (a compound key's struct type, format/keys.py); ``key_stored`` the key
    column's type.
    """

    key_field: str
    key_type: str
    columns: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.key_type = check_key_type(self.key_type)
        except FormatError as exc:
            raise ConfigError(str(exc)) from None
        if not self.key_field or self.key_field.startswith(RESERVED_PREFIX):
            raise ConfigError(f"key field {self.key_field!r} is empty or uses the reserved prefix {RESERVED_PREFIX}")

    @property
    def key_stored(self) -> str:
        return stored_type(self.key_type)

    def copy(self) -> Schema:
        return Schema(self.key_field, self.key_type, dict(self.columns))

    def to_arrow(self) -> pa.Schema:
        fields = [arrow_field(self.key_field, self.key_stored, nullable=False)]
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

    @classmethod
    def of_json(cls, columns: Any) -> Schema:
        """A schema in its JSON form, a manifest's ``schema`` (the key column first); FormatError if it is not."""
        first = columns[0] if isinstance(columns, list) and columns else None
        if not isinstance(first, dict):
            raise FormatError('a schema is a JSON array of {"name": ..., "type": ...} objects, the key column first')
        name, type_ = first.get("name"), first.get("type")
        if not isinstance(name, str) or not isinstance(type_, str):
            raise FormatError(f"the key column {first!r:.200} is not a name with a type")
        try:
            return cls.from_json(name, check_key_type(type_), columns)
        except ConfigError as exc:  # a key field the format does not allow
            raise FormatError(str(exc)) from None

    @classmethod
    def declared(cls, schema: pa.Schema) -> Schema:
        """A schema declared by a user (``PublishOptions.schema``): the first field is the key column (a struct
        of string and int64 fields for a compound key), the others the value columns; ConfigError naming what
        combe cannot hold."""
        try:
            if not len(schema):
                raise FormatError("it has no fields; the first is the key column")
            types = [(f.name, type_of_field(f)) for f in schema]
            return cls.from_json(types[0][0], types[0][1], [{"name": n, "type": t} for n, t in types])
        except FormatError as exc:
            raise ConfigError(f"the declared schema cannot be a combe schema: {exc}") from None

    def declared_arrow(self) -> pa.Schema:
        """The Arrow form ``declared`` reads back: the key column with its declared type."""
        return pa.schema([arrow_field(self.key_field, self.key_type, nullable=False),
                          *(arrow_field(name, kind) for name, kind in self.columns.items())])

    def empty_table(self) -> pa.Table:
        return self.to_arrow().empty_table()


def grows(old: str, new: str) -> bool:
    """Whether a column of type ``old`` may hold type ``new`` at a later version reached by a delta.

    The rules of docs/FORMAT.md, "Schema evolution": a type stays, or ``null``
    becomes any type, or a struct appends fields, at any depth (list items,
    struct fields, map values). Any other change (int64 to float64 once held,
    a removed or reordered field) needs a snapshot-only version.
    """
    if old == new or old == "null":
        return True
    head = kind_of(old)
    if head != kind_of(new) or head not in ("list", "struct", "map"):
        return False
    if head == "list":
        return grows(list_item(old), list_item(new))
    if head == "map":
        (old_key, old_value), (new_key, new_value) = map_types(old), map_types(new)
        return old_key == new_key and grows(old_value, new_value)
    before, after = struct_fields(old), struct_fields(new)
    return len(after) >= len(before) and all(
        name == new_name and grows(type_, new_type) for (name, type_), (new_name, new_type) in zip(before, after))


def declared_over(held: Schema, declared: Schema) -> Schema:
    """The schema a version of a dataset published in ``held`` takes under a declared schema: the held columns
    in their order with their declared types (each must grow into it, by ``grows``), then the declared ones the
    dataset does not have yet. ConfigError naming a held column the declaration drops or retypes."""
    for name, held_type in held.columns.items():
        if name not in declared.columns:
            raise ConfigError(f"the declared schema has no column {name!r}, which the dataset holds ({held_type}): "
                              "declare it")
        if not grows(held_type, declared.columns[name]):
            raise ConfigError(f"the declared schema makes column {name!r} a {declared.columns[name]}, but the "
                              f"dataset holds it as {held_type}, which cannot grow into it (docs/FORMAT.md, "
                              "Schema evolution)")
    return Schema(held.key_field, held.key_type, {name: declared.columns[name] for name in
                                                  [*held.columns, *declared.columns]})


def conform_array(array: pa.Array, type_: str, where: str) -> pa.Array:
    """``array`` read as combe type ``type_``, at any depth; ``where`` names it in errors.

    A null-typed array becomes nulls of any type; a struct gains the fields
    it lacks (null) and loses those ``type_`` does not have, which must hold
    no value (a reverse delta leads back to a type without them); lists and
    map values are conformed item by item; other differences are Arrow casts
    (int64 to float64). Arrow's own cast is not used for nested types: it
    drops struct fields that hold values without a word.
    """
    target = arrow_type(type_)
    if array.type == target:
        return array
    if pa.types.is_null(target):
        if array.null_count != len(array):
            raise FormatError(f"{where} holds values, but the schema has it all null")
        return pa.nulls(len(array))
    if pa.types.is_null(array.type):
        return pa.nulls(len(array), target)
    mask = array.is_null() if array.null_count else None
    head = kind_of(type_)
    if head == "list" and pa.types.is_list(array.type):
        items = conform_array(array.values, list_item(type_), f"{where}[]")
        return pa.ListArray.from_arrays(array.offsets, items, type=target, mask=mask)
    if head == "map" and pa.types.is_map(array.type):
        key_type, value_type = map_types(type_)
        keys = conform_array(array.keys, key_type, f"{where} (keys)")
        items = conform_array(array.items, value_type, f"{where}{{}}")
        return pa.MapArray.from_arrays(array.offsets, keys, items, type=target, mask=mask)
    if head == "struct" and pa.types.is_struct(array.type):
        present = {array.type.field(i).name: i for i in range(array.type.num_fields)}
        fields = struct_fields(type_)
        for name in present.keys() - {name for name, _ in fields}:
            child = array.field(present[name])  # a struct's child keeps its own validity: combine both
            if child.null_count != len(child) and pc.any(pc.and_(array.is_valid(), child.is_valid())).as_py():
                raise FormatError(f"{where}.{name} holds values, but the schema's {type_} has no field {name!r}")
        children = [conform_array(array.field(present[name]), field_type, f"{where}.{name}") if name in present
                    else pa.nulls(len(array), arrow_type(field_type)) for name, field_type in fields]
        # the mask always: a struct of no fields has no child to take its length from
        return pa.StructArray.from_arrays(children, fields=list(target), mask=array.is_null())
    try:
        return array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise FormatError(f"{where} has type {type_of_arrow(array.type)}, which cannot be read as {type_}: "
                          f"{exc}") from exc


def conform(table: pa.Table, schema: Schema) -> pa.Table:
    """``table`` with the columns of ``schema``: missing ones added as nulls, the others conformed (conform_array)."""
    target = schema.to_arrow()
    types = {schema.key_field: schema.key_stored, **schema.columns}
    columns = []
    for arrow in target:
        if arrow.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, arrow.type))
            continue
        column = table.column(arrow.name)
        if column.type != arrow.type:
            where = f"column {arrow.name!r}"
            column = pa.chunked_array([conform_array(chunk, types[arrow.name], where) for chunk in column.chunks],
                                      type=arrow.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=target)


def conform_value(value: Any, type_: str) -> Any:
    """A Python value (as a reader returns it) read as combe type ``type_``, by the rules of ``conform_array``.

    Used on records already read, when a delta changes the schema under them.
    """
    if value is None or type_ == "null":
        return None
    head = kind_of(type_)
    if head == "struct":
        return {name: conform_value(value.get(name), field_type) for name, field_type in struct_fields(type_)}
    if head == "list":
        item = list_item(type_)
        return [conform_value(x, item) for x in value]
    if head == "map":
        value_type = map_types(type_)[1]
        return {k: conform_value(x, value_type) for k, x in value.items()}
    if head == "float64" and type(value) is int:
        return float(value)
    return value


def conform_record(record: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """A record already read, read in ``schema``: its columns in order, absent ones None, each by ``conform_value``."""
    return {schema.key_field: record[schema.key_field],
            **{name: conform_value(record.get(name), kind) for name, kind in schema.columns.items()}}
