"""Turning raw records into (key, row) pairs: key types, value formats, the key field rule.

Every way a record can be unusable raises ValueError with a reason a user can
act on; the caller adds where the record is and applies ``on_bad_record``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from combe.format.errors import ConfigError, FormatError
from combe.format.jsontext import loads_record
from combe.format.keys import KEY_TYPES, RULE, check_key_type, compound_of, key_fields, message_key, parse_int64
from combe.format.schema import VALUE_FORMATS
from combe.format.settings import setting


MISSING = object()


@dataclass(frozen=True)
class RecordFormat:
    """How keys and values are read (settings: ``combe publish`` has a flag for each)."""

    key_field: str = setting("key", "name of the key column; a value that carries this field must agree with "
                                    "the message key. Whole states: several names, tenant,id, make a compound "
                                    "key of the rows' fields (the key column is then named key)")
    key_type: str = setting("string", "string; int64: decimal text (ASCII digits, an optional leading minus) in "
                                      "messages; or a compound key, struct<tenant:int64,id:string>: messages' keys "
                                      "are JSON objects of exactly those fields", parse=check_key_type)
    value_format: str = setting("json", "json: object fields become columns; string or bytes: one 'value' column",
                                choices=VALUE_FORMATS)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "key_type", check_key_type(self.key_type))  # its canonical spelling
        except FormatError as exc:
            raise ConfigError(f"key_type={self.key_type!r}: {exc}") from None
        if "," in self.key_field:
            object.__setattr__(self, "key_type", compound_of(self.key_field.split(","), self.key_type))
            object.__setattr__(self, "key_field", "key")
        if self.value_format not in VALUE_FORMATS:
            raise ConfigError(f"value_format={self.value_format!r}: use one of {', '.join(VALUE_FORMATS)}")


class Decoder:
    """Decodes records of one RecordFormat; ``decode`` is the per-record hot path."""

    def __init__(self, fmt: RecordFormat, *, no_key_hint: str = "") -> None:
        self.fmt = fmt
        self.no_key = "the record has no key" + (f" ({no_key_hint})" if no_key_hint else "")
        self.value_column = fmt.value_format != "json"
        self.compound = fmt.key_type not in KEY_TYPES

    def key(self, raw: Any) -> str | int:
        if raw is None:
            raise ValueError(self.no_key)
        if self.compound:
            return message_key(raw, self.fmt.key_type)
        if self.fmt.key_type == "string":
            if isinstance(raw, bytes):
                try:
                    return raw.decode()
                except UnicodeDecodeError:
                    raise ValueError(f"key {raw[:40]!r} is not UTF-8 text") from None
            if isinstance(raw, (str, int)) and not isinstance(raw, bool):
                return str(raw)
            raise ValueError(f"key {raw!r} is a {type(raw).__name__}, not a string")
        value = parse_int64(raw)
        if value is None:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", "replace")
            shown = raw[:40] if isinstance(raw, str) else raw
            raise ValueError(f"key {shown!r} is not a 64-bit integer (key_type=int64 takes {RULE})")
        return value

    def value(self, key: str | int, raw: Any) -> dict[str, Any] | None:
        """The row's value columns, or None for a tombstone."""
        if raw is None:
            return None
        if self.value_column:
            if self.fmt.value_format == "string":
                if isinstance(raw, bytes):
                    try:
                        raw = raw.decode()
                    except UnicodeDecodeError:
                        raise ValueError("value is not UTF-8 text (value_format=string)") from None
                elif not isinstance(raw, str):
                    raise ValueError(f"value is a {type(raw).__name__}, not a string (value_format=string)")
            elif isinstance(raw, str):
                raw = raw.encode()
            elif not isinstance(raw, bytes):
                raise ValueError(f"value is a {type(raw).__name__}, not bytes (value_format=bytes)")
            return {"value": raw}
        if isinstance(raw, (bytes, str)):
            try:
                raw = loads_record(raw)
            except ValueError as exc:
                raise ValueError(f"value is not valid JSON: {exc}") from None
            if raw is None:
                return None
        if not isinstance(raw, dict):
            raise ValueError(f"value is a JSON {type(raw).__name__}, not an object (use value_format=string "
                             "or bytes to keep raw values)")
        field = self.fmt.key_field
        if field in raw:
            inner = raw.pop(field)
            try:
                agrees = self.key(inner) == key
            except ValueError:
                agrees = False
            if not agrees:
                raise ValueError(f"the value's {field!r} field is {inner!r} but the record's key is {key!r}")
        return raw

    def decode(self, raw_key: Any, raw_value: Any) -> tuple[str | int, dict[str, Any] | None]:
        key = self.key(raw_key)
        return key, self.value(key, raw_value)

    def decode_jsonl(self, line: bytes) -> tuple[str | int, dict[str, Any] | None]:
        """A ``{"key": ..., "value": ...}`` line."""
        try:
            obj = loads_record(line)
        except ValueError as exc:
            raise ValueError(f"malformed JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ValueError('the line is not a JSON object like {"key": ..., "value": ...}')
        if "key" not in obj:
            raise ValueError('the line has no "key" field')
        value = obj.get("value", MISSING)
        if value is MISSING:
            raise ValueError('the line has no "value" field (use "value": null to delete the key)')
        key = self.key(obj["key"])
        if self.value_column and value is not None and not isinstance(value, str):
            raise ValueError(f"value is a JSON {type(value).__name__}, not a string (value_format="
                             f"{self.fmt.value_format})")
        return key, self.value(key, value)

    def decode_row(self, row: Any) -> tuple[str | int, dict[str, Any] | None]:
        """A row of a whole state: a dict, or a JSON object's text, holding the key field among its columns."""
        if isinstance(row, (bytes, str)):
            try:
                row = loads_record(row)
            except ValueError as exc:
                raise ValueError(f"malformed JSON: {exc}") from None
        if not isinstance(row, Mapping):
            raise ValueError(f"the row is a {type(row).__name__}, not an object of columns")
        field = self.fmt.key_field
        if self.compound and field not in row:  # the key's fields are the row's own columns
            names = [name for name, _ in key_fields(self.fmt.key_type)]
            missing = [name for name in names if row.get(name) is None]
            if missing:
                raise ValueError(f"the row's key field{'s' if len(missing) > 1 else ''} "
                                 f"{', '.join(map(repr, missing))} {'are' if len(missing) > 1 else 'is'} absent "
                                 f"or null (the key is {self.fmt.key_type})")
            key = self.key({name: row[name] for name in names})
            return key, dict(row)
        if field not in row:
            raise ValueError(f"the row has no {field!r} field (the key)")
        key = self.key(row[field])
        return key, self.value(key, dict(row))
