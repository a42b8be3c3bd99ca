"""Column types: the small closed set combe writes, as type expressions, and their Arrow types.

A type is written as one string, in manifests and everywhere in the code::

    type   := scalar | "list<" type ">" | "struct<" [field ("," field)*] ">" | "map<" key "," type ">"
    scalar := "null" | "bool" | "int64" | "float64" | "string" | "binary" | "json"
    key    := "string" | "int64"
    field  := name ":" type
    name   := [A-Za-z_][A-Za-z0-9_]*  or a JSON string literal ("a b", "x:y")

with no spaces. ``json`` (nested values kept as canonical JSON text) is a
top-level column type only. The canonical spelling of a type is the one
``parse_type`` returns: a name is written bare when it can be, else as a JSON
string. Each expression maps to exactly one Arrow type (docs/FORMAT.md), so a
reader in any language can check a blob's schema against its manifest.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import pyarrow as pa

from .errors import FormatError

SCALARS = ("null", "bool", "int64", "float64", "string", "binary", "json")
NESTED = ("list", "struct", "map")
MAP_KEYS = ("string", "int64")
TYPE_METADATA = b"combe.type"

_SCALAR_ARROW: dict[str, pa.DataType] = {
    "null": pa.null(), "bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(),
    "string": pa.string(), "binary": pa.binary(), "json": pa.string(),
}
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r'[A-Za-z0-9_]+|"(?:[^"\\]|\\.)*"|[<>,:]')


def _name_text(name: str) -> str:
    return name if _BARE_NAME.fullmatch(name) else json.dumps(name, ensure_ascii=False)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[str] = []
        position = 0
        for match in _TOKEN.finditer(text):
            if match.start() != position:
                break
            self.tokens.append(match.group())
            position = match.end()
        if position != len(text):
            raise self.error(f"unexpected {text[position:position + 10]!r}")
        self.at = 0

    def error(self, why: str) -> FormatError:
        return FormatError(f"type {self.text[:200]!r} is not a combe type: {why}")

    def take(self, expected: str | None = None) -> str:
        if self.at >= len(self.tokens):
            raise self.error("it ends too early")
        token = self.tokens[self.at]
        if expected is not None and token != expected:
            raise self.error(f"expected {expected!r}, found {token!r}")
        self.at += 1
        return token

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def type(self, depth: int = 0) -> str:
        if depth > 32:
            raise self.error("it nests deeper than 32 levels")
        word = self.take()
        if word in SCALARS:
            return word
        if word not in NESTED:
            raise self.error(f"unknown type {word!r}")
        self.take("<")
        if word == "list":
            item = self.type(depth + 1)
            if item == "json":
                raise self.error("json is a column type only, not an item type")
            self.take(">")
            return f"list<{item}>"
        if word == "map":
            key = self.take()
            if key not in MAP_KEYS:
                raise self.error(f"a map's keys are {' or '.join(MAP_KEYS)}, not {key!r}")
            self.take(",")
            value = self.type(depth + 1)
            if value == "json":
                raise self.error("json is a column type only, not a map value type")
            self.take(">")
            return f"map<{key},{value}>"
        fields: list[str] = []
        names: set[str] = set()
        while self.peek() != ">":
            if fields:
                self.take(",")
            token = self.take()
            if token.startswith('"'):
                name = json.loads(token)
            elif _BARE_NAME.fullmatch(token):
                name = token
            else:
                raise self.error(f"{token!r} is not a field name")
            if name in names:
                raise self.error(f"field {name!r} appears twice")
            names.add(name)
            self.take(":")
            field_type = self.type(depth + 1)
            if field_type == "json":
                raise self.error("json is a column type only, not a field type")
            fields.append(f"{_name_text(name)}:{field_type}")
        self.take(">")
        return f"struct<{','.join(fields)}>"


@lru_cache(maxsize=4096)
def parse_type(text: str) -> str:
    """The canonical spelling of type ``text``; FormatError if it is not a combe type."""
    if not isinstance(text, str):
        raise FormatError(f"type {text!r} is not a string")
    parser = _Parser(text)
    found = parser.type()
    if parser.peek() is not None:
        raise parser.error(f"unexpected {parser.peek()!r} after the type")
    return found


def kind(type_: str) -> str:
    """The outermost kind of a type: a scalar name, or ``list``, ``struct`` or ``map``."""
    return type_.split("<", 1)[0]


@lru_cache(maxsize=4096)
def _structure(type_: str) -> tuple[str, ...] | tuple[tuple[str, str], ...]:
    parser = _Parser(type_)
    head = parser.take()
    parser.take("<")
    if head == "list":
        return (parser.type(),)
    if head == "map":
        key = parser.take()
        parser.take(",")
        return (key, parser.type())
    fields: list[tuple[str, str]] = []
    while parser.peek() != ">":
        if fields:
            parser.take(",")
        token = parser.take()
        name = json.loads(token) if token.startswith('"') else token
        parser.take(":")
        fields.append((name, parser.type()))
    return tuple(fields)


def list_item(type_: str) -> str:
    """The item type of ``list<T>``."""
    return _structure(type_)[0]  # type: ignore[return-value]


def map_types(type_: str) -> tuple[str, str]:
    """The key and value types of ``map<K,V>``."""
    key, value = _structure(type_)
    return key, value  # type: ignore[return-value]


def struct_fields(type_: str) -> list[tuple[str, str]]:
    """The (name, type) of each field of ``struct<...>``, in order."""
    return list(_structure(type_))  # type: ignore[arg-type]


def struct_type(fields: list[tuple[str, str]]) -> str:
    """The canonical spelling of a struct with these fields."""
    return parse_type("struct<" + ",".join(f"{_name_text(n)}:{t}" for n, t in fields) + ">")


@lru_cache(maxsize=4096)
def arrow_type(type_: str) -> pa.DataType:
    """The one Arrow type of a combe type."""
    head = kind(type_)
    if head in _SCALAR_ARROW:
        return _SCALAR_ARROW[head]
    if head == "list":
        return pa.list_(arrow_type(list_item(type_)))
    if head == "map":
        key, value = map_types(type_)
        return pa.map_(arrow_type(key), arrow_type(value))
    return pa.struct([pa.field(name, arrow_type(t)) for name, t in struct_fields(type_)])


def arrow_field(name: str, type_: str, *, nullable: bool = True) -> pa.Field:
    """The Arrow field of a column: ``json`` columns carry their type in the field's metadata."""
    metadata = {TYPE_METADATA: b"json"} if type_ == "json" else None
    return pa.field(name, arrow_type(type_), nullable=nullable, metadata=metadata)


def type_of_arrow(data_type: pa.DataType) -> str:
    """The combe type of an Arrow type; FormatError for a type combe does not write."""
    for name, scalar in _SCALAR_ARROW.items():
        if name != "json" and data_type == scalar:
            return name
    if pa.types.is_map(data_type):
        key = type_of_arrow(data_type.key_type)
        if key not in MAP_KEYS:
            raise FormatError(f"Arrow type {data_type} has map keys of type {key}; combe writes string or int64")
        return f"map<{key},{type_of_arrow(data_type.item_type)}>"
    if pa.types.is_list(data_type):
        return f"list<{type_of_arrow(data_type.value_type)}>"
    if pa.types.is_struct(data_type):
        fields = [(data_type.field(i).name, type_of_arrow(data_type.field(i).type))
                  for i in range(data_type.num_fields)]
        return struct_type(fields)
    raise FormatError(f"Arrow type {data_type} is not one combe writes")


def type_of_field(field: pa.Field) -> str:
    """The combe type of an Arrow field written by combe."""
    if field.metadata and field.metadata.get(TYPE_METADATA) == b"json":
        if field.type != pa.string():
            raise FormatError(f"column {field.name!r} is marked json but has Arrow type {field.type}")
        return "json"
    try:
        return type_of_arrow(field.type)
    except FormatError as exc:
        raise FormatError(f"column {field.name!r}: {exc}") from None
