"""The types of JSON values, and how a column's type grows: one set of rules for every decoding path.

A decoded JSON value has one combe type (format/types.py): ``null``, ``bool``,
``int64``, ``float64``, ``string``, a ``list<T>`` of items of one type, or a
``struct<...>`` of its fields (objects become structs, as Arrow's JSON reader
reads them). Types meet by ``unify``:

- ``null`` gives way to any type, at any depth (``list<null>`` becomes
  ``list<int64>``), even in a column already published;
- ``int64`` becomes ``float64`` only where the column (or the part of it) was
  not published as ``int64``; a ``float64`` column takes integers as floats;
- two structs merge field by field, and a struct gains the fields it has not
  seen, as the top level gains columns;
- lists unify their item types;
- a ``json`` column (format version 1) takes any value;
- anything else is a conflict.

A value with no typed shape of its own (a list mixing numbers and strings,
``[1, "a"]``) is a bad record, as a conflict is; so is one nested deeper than
``MAX_DEPTH`` levels or an integer beyond int64.
"""

from __future__ import annotations

from typing import Any

from combe.format.keys import INT64_MAX, INT64_MIN
from combe.format.types import kind, list_item, struct_fields, struct_type

# Levels of lists and objects a value may nest (the type grammar allows 32 nested types).
MAX_DEPTH = 31


class Conflict(ValueError):
    """Two types that do not unify; ``path`` is where inside the value (``""`` for the value itself)."""

    def __init__(self, have: str, got: str, path: str = "") -> None:
        super().__init__(f"{have} and {got} do not unify")
        self.have, self.got, self.path = have, got, path


def value_type(value: Any, depth: int = 0) -> str:
    """The combe type of a decoded JSON value; ValueError when it has none."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "bool"
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"integer {value} does not fit in int64")
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes) and depth == 0:
        return "binary"  # the value column of value_format bytes
    if depth >= MAX_DEPTH:
        raise ValueError(f"the value nests lists and objects deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        item = "null"
        for position, element in enumerate(value):
            try:
                item = unify(item, value_type(element, depth + 1), None)
            except Conflict as exc:
                raise ValueError(f"the list has no common item type: item {position} is {exc.got} after "
                                 f"{exc.have} items{at(exc.path)}") from None
        return f"list<{item}>"
    if isinstance(value, dict):
        return struct_type([(name, value_type(field, depth + 1)) for name, field in value.items()])
    raise ValueError(f"a value of type {type(value).__name__} is not JSON")


def at(path: str) -> str:
    return f" (at {path})" if path else ""


def unify(have: str, got: str, published: str | None) -> str:
    """The type a column of type ``have`` takes on meeting a value of type ``got``; Conflict if none.

    ``published`` is the column's type as published before this cycle (None
    if it was not): what it fixes stays fixed, but for nulls and new struct fields.
    """
    if have == got or got == "null":
        return have
    if have == "null":
        return got
    if have == "json":
        return have
    if have == "float64" and got == "int64":
        return have
    if have == "int64" and got == "float64" and published != "int64":
        return got
    head = kind(have)
    if head != kind(got) or head not in ("list", "struct"):
        raise Conflict(have, got)
    fixed = published if published is not None and kind(published) == head else None
    if head == "list":
        try:
            return f"list<{unify(list_item(have), list_item(got), list_item(fixed) if fixed else None)}>"
        except Conflict as exc:
            raise Conflict(exc.have, exc.got, "[]" + exc.path) from None
    fields = dict(struct_fields(have))
    held = dict(struct_fields(fixed)) if fixed else {}
    for name, field_type in struct_fields(got):
        try:
            fields[name] = unify(fields[name], field_type, held.get(name)) if name in fields else field_type
        except Conflict as exc:
            raise Conflict(exc.have, exc.got, f".{name}{exc.path}") from None
    return struct_type(list(fields.items()))
