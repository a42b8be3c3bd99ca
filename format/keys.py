"""What a key may be written as: one rule for the producer, the consumer and the HTTP endpoint.

A dataset's key type is ``string``, ``int64``, or a compound key: a struct
of string and int64 fields, ``struct<tenant:int64,id:string>`` (the type
grammar of format/types.py). A compound key is stored as text: the canonical
JSON array of its field values in the declared order (``[7,"x"]``,
format/jsontext.py), so the key column, key order, the key index and
sharding treat it as a string key (docs/FORMAT.md, "Compound keys").

A key of an ``int64`` dataset is an integer within int64, or text made of
ASCII digits with an optional leading minus and nothing else: no spaces, no
plus sign, no other script's digits (``"١"``), no underscores. Text that
Python's ``int()`` would also accept (``" 1"``, ``"1_000"``) is refused,
so a message key, a ``Consumer.get`` argument and a URL segment either name
the same record or are refused alike. Leading zeros are allowed (``"007"``
is 7), as ``int()`` allows them.

``INT64_TEXT`` is the same rule as a regular expression, for decoding keys in
bulk (Arrow's ``match_substring_regex``); the value must still be checked
against int64's bounds.
"""

from __future__ import annotations

import operator
import re
from typing import Any

from .errors import ConfigError, FormatError, KeyTypeError
from .jsontext import canonical_text, loads_record
from .types import kind, parse_type, struct_fields

KEY_TYPES = ("string", "int64")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT64_TEXT = "^-?[0-9]+$"
# The rule in words, for messages.
RULE = "an integer from -2**63 to 2**63-1, or its ASCII digits with an optional leading minus and nothing else"
_TEXT = re.compile(INT64_TEXT.encode())
# More significant digits than this cannot fit in int64 (2**63 has 19): refused before int() reads them,
# so a megabyte of digits costs a regex match, not a conversion.
_MAX_DIGITS = 19


def parse_int64(raw: Any) -> int | None:
    """``raw`` as an int64 key: an integer (numpy integers too, never a bool) or text by the rule above; else None."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("ascii")
        except UnicodeEncodeError:
            return None
    if isinstance(raw, (bytes, bytearray)):
        # fullmatch, not match with $: "$" also matches before a final newline.
        if not _TEXT.fullmatch(raw) or len(raw.lstrip(b"-").lstrip(b"0")) > _MAX_DIGITS:
            return None
        value = int(raw)
    elif isinstance(raw, bool):
        return None
    else:
        try:
            value = operator.index(raw)  # int, and numpy integers
        except TypeError:
            return None
    return value if INT64_MIN <= value <= INT64_MAX else None


def check_key_type(text: Any) -> str:
    """The canonical spelling of key type ``text``; FormatError if it is not string, int64 or a struct of one or
    more string and int64 fields."""
    if text in KEY_TYPES:
        return str(text)
    why = f"key type {str(text)[:200]!r} is not {', '.join(KEY_TYPES)} or struct<...> of string and int64 fields"
    try:
        type_ = parse_type(text)
    except FormatError as exc:
        raise FormatError(f"{why}: {exc}") from None
    if kind(type_) != "struct" or not struct_fields(type_) or any(t not in KEY_TYPES for _, t in struct_fields(type_)):
        raise FormatError(why)
    return type_


def key_fields(key_type: str) -> list[tuple[str, str]]:
    """The (name, type) of each field of a compound key type, in order; [] for a string or int64 key."""
    return [] if key_type in KEY_TYPES else struct_fields(key_type)


def compound_of(names: list[str], key_type: str) -> str:
    """The compound key type of a whole state's key fields ``names`` (``--key-field tenant,id``): ``key_type``
    when it is a struct of exactly those fields in that order; ConfigError otherwise (a field's type is not
    guessed from the data: ``tenant`` of ``007`` reads as text or a number alike)."""
    names = [name.strip() for name in names]
    if len(names) < 2 or not all(names) or len(set(names)) != len(names):
        raise ConfigError(f"key fields {','.join(names)!r}: name two or more different fields, tenant,id")
    if key_type in KEY_TYPES:
        raise ConfigError(f"key fields {','.join(names)!r} make a compound key: give its type, key_type "
                          f"'struct<{','.join(f'{name}:...' for name in names)}>' (each int64 or string)")
    declared = [name for name, _ in key_fields(key_type)]
    if declared != names:
        raise ConfigError(f"key fields {','.join(names)!r} are not the fields of key type {key_type}, in order")
    return key_type


def stored_type(key_type: str) -> str:
    """The type of the key column: a compound key is stored as its canonical JSON text."""
    return key_type if key_type in KEY_TYPES else "string"


def check_shardable(dataset: str, key_type: str) -> None:
    """ConfigError for a compound key: Kafka partitions a message by its raw key bytes, and a JSON object key may
    be written many ways, so the shards of a compound key would not be sets of partitions (format/partition.py)."""
    if key_type not in KEY_TYPES:
        raise ConfigError(f"{dataset}: a compound key ({key_type}) cannot be sharded; publish it unsharded")


def message_key(raw: Any, key_type: str) -> str:
    """A compound key read from a record (a JSON object's text, or the object decoded) as stored; ValueError
    unless it is an object with exactly the key's fields, each of its type (int64: a JSON integer)."""
    fields = key_fields(key_type)
    if isinstance(raw, (bytes, bytearray, str)):
        try:
            raw = loads_record(bytes(raw) if isinstance(raw, bytearray) else raw)
        except ValueError as exc:
            raise ValueError(f"key is not JSON ({exc}); the key type is {key_type}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"key {_shown(raw)} is not a JSON object; the key type is {key_type}")
    names = [name for name, _ in fields]
    if raw.keys() != set(names):
        missing, extra = [n for n in names if n not in raw], sorted(set(raw) - set(names))
        wrong = "; ".join(([f"it lacks {', '.join(map(repr, missing))}"] if missing else [])
                          + ([f"it has other fields {', '.join(map(repr, extra))}"] if extra else []))
        raise ValueError(f"key {_shown(raw)} is not an object of exactly the fields of {key_type}: {wrong}")
    values = []
    for name, type_ in fields:
        value = raw[name]
        fits = isinstance(value, str) if type_ == "string" else (
            type(value) is int and INT64_MIN <= value <= INT64_MAX)
        if not fits:
            raise ValueError(f"key field {name!r} is {_shown(value)}, not {type_}; the key type is {key_type}")
        values.append(value)
    return canonical_text(values)


def lookup_key(raw: Any, key_type: str, where: str = "key") -> str | int:
    """A key given to a reader (``Consumer.get``, a URL, a JSON body) as the dataset stores it; KeyTypeError if it
    cannot be one. ``where`` names it in the message (``keys[3]``). A compound key is a tuple or list of its
    field values in order, a dict of exactly its fields, or its stored text (``'[7,"x"]'``, exactly); an int64
    field takes what an int64 key takes."""
    if key_type not in KEY_TYPES:
        return _compound(raw, key_type, where)
    if key_type == "string":
        if isinstance(raw, str):
            return raw
        raise KeyTypeError(f"{where} {raw!r} is a {type(raw).__name__}; this dataset's keys are strings")
    value = parse_int64(raw)
    if value is None:
        raise KeyTypeError(f"{where} {_shown(raw)} is not a 64-bit integer ({RULE}); this dataset's keys are int64")
    return value


def _compound(raw: Any, key_type: str, where: str) -> str:
    fields = key_fields(key_type)
    names = [name for name, _ in fields]
    if isinstance(raw, str):  # the stored text names its key too (a record's key field, given back)
        try:
            values = loads_record(raw)
        except ValueError:
            values = None
        if not isinstance(values, list) or len(values) != len(fields) or _compound(values, key_type, where) != raw:
            raise KeyTypeError(f"{where} {_shown(raw)} is not a tuple of {len(fields)} values, a dict of the fields "
                               f"{names} or a key's stored text; this dataset's key is {key_type}")
        return raw
    if isinstance(raw, dict):
        if raw.keys() != set(names):
            raise KeyTypeError(f"{where} {_shown(raw)} does not have exactly the fields {names} of this dataset's "
                               f"key {key_type}")
        raw = [raw[name] for name in names]
    elif not isinstance(raw, (tuple, list)) or len(raw) != len(fields):
        raise KeyTypeError(f"{where} {_shown(raw)} is not a tuple of {len(fields)} values or a dict of the fields "
                           f"{names}; this dataset's key is {key_type}")
    values = [lookup_key(value, type_, f"{where} field {name!r}") for value, (name, type_) in zip(raw, fields)]
    return canonical_text(values)


def _shown(raw: Any) -> str:
    """The refused key in a message, cut short: it may be a whole request body's worth of text."""
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."
