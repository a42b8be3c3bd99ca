"""How an index compares nested values (list, struct, map): one exact, hashable form, and the index hash.

Equality is the state checksum's (docs/FORMAT.md): two nested values are
equal when their hashes there would be equal by construction, not by
chance. So floats compare by their bits (``0.0`` and ``-0.0`` differ; a
lookup's numbers are first made the column's type, so ``[1]`` finds
``[1.0]`` in a ``list<float64>``), a map's entry order does not matter, and
a struct field that is null
is the same as one the struct's type does not have yet: a value keeps its
form, and its hash, when its type grows (docs/FORMAT.md, "Schema
evolution"), so one snapshot's index serves every later View on it.

The index hash of a row is the low 32 bits of that value hash, computed for
a whole column at once by format/checksum.py; a lookup value is hashed the
same way, through a one-value Arrow array of the column's type.
"""

from __future__ import annotations

import struct
from typing import Any

import pyarrow as pa

from combe.format.checksum import value_hashes
from combe.format.errors import KeyTypeError
from combe.format.keys import INT64_MAX, INT64_MIN
from combe.format.types import arrow_type, kind, list_item, map_types, struct_fields

_SCALARS: dict[str, tuple[type, ...]] = {"string": (str,), "int64": (int,), "float64": (int, float),
                                         "bool": (bool,), "binary": (bytes,)}


class Nested:
    """A nested value as an index compares it: equal and hashed by its frozen form; ``hash`` is the index hash."""

    __slots__ = ("form", "hash")

    def __init__(self, form: Any, hash_: int = 0) -> None:
        self.form, self.hash = form, hash_

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Nested) and self.form == other.form

    def __hash__(self) -> int:
        return hash(self.form)

    def __repr__(self) -> str:
        return f"Nested({self.form!r})"


def freeze(value: Any, type_: str) -> Any:
    """The exact, hashable form of a value of ``type_`` (None stays None)."""
    if value is None:
        return None
    head = kind(type_)
    if head == "list":
        item = list_item(type_)
        return tuple(freeze(x, item) for x in value)
    if head == "struct":
        # Null fields are left out, so a struct that gained fields since compares the same.
        return frozenset((name, freeze(value[name], t)) for name, t in struct_fields(type_)
                         if value.get(name) is not None)
    if head == "map":
        value_type = map_types(type_)[1]
        return frozenset((k, freeze(x, value_type)) for k, x in value.items())
    if head == "float64":
        return struct.pack("<d", value)
    return value


def _coerced(value: Any, type_: str, where: str) -> Any:
    """``value`` as a value of ``type_`` (ints made floats for float64); KeyTypeError where it cannot be one."""
    if value is None:
        return None
    head = kind(type_)

    def refuse() -> KeyTypeError:
        return KeyTypeError(f"{value!r:.100} is a {type(value).__name__}, but {where} holds {type_} values")

    if head == "list":
        if not isinstance(value, (list, tuple)):
            raise refuse()
        item = list_item(type_)
        return [_coerced(x, item, f"{where}[{i}]") for i, x in enumerate(value)]
    if head in ("struct", "map"):
        if not isinstance(value, dict):
            raise refuse()
        if head == "map":
            key_type, value_type = map_types(type_)
            return {_coerced(k, key_type, f"a key of {where}"): _coerced(x, value_type, f"{where}[{k!r}]")
                    for k, x in value.items()}
        fields = dict(struct_fields(type_))
        unknown = [name for name in value if name not in fields]
        if unknown:
            raise KeyTypeError(f"{where} has no field {unknown[0]!r} (its fields: {', '.join(fields) or 'none'})")
        return {name: _coerced(value.get(name), t, f"{where}.{name}") for name, t in fields.items()}
    return scalar(value, head, where)


def scalar(value: Any, type_: str, where: str) -> Any:
    """``value`` as a value of scalar ``type_`` (ints made floats for float64); KeyTypeError where it cannot be one.

    The one check of a lookup's scalars, in nested values and in scalar columns (indexes.py).
    """
    expected = _SCALARS.get(type_, ())
    if not isinstance(value, expected) or (type_ in ("int64", "float64") and isinstance(value, bool)):
        raise KeyTypeError(f"{value!r:.100} is a {type(value).__name__}, but {where} holds {type_} values")
    checked: Any = value  # one of the expected types
    if type_ == "int64" and not INT64_MIN <= checked <= INT64_MAX:
        raise KeyTypeError(f"{checked} is outside the 64-bit integers that {where} holds")
    return float(checked) if type_ == "float64" else checked


def lookup(value: Any, type_: str, field: str) -> Nested | None:
    """A lookup value in compared form, with its index hash; KeyTypeError if it cannot be a ``type_`` value."""
    coerced = _coerced(value, type_, f"column {field!r}")
    if coerced is None:
        return None
    hashes, _ = value_hashes(pa.array([coerced], arrow_type(type_)), type_)
    return Nested(freeze(coerced, type_), int(hashes[0]) & 0xFFFFFFFF)
