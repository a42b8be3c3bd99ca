"""Changelog files and the reference model they are checked against: replaying the log into a dict.

Records are compared in one canonical form: a record's fields without its key
and without null fields, at any depth of objects (a missing field and a null
one are the same record to combe, since a column or struct field added later
reads as null in older rows), as sorted JSON text so that 1 and 1.0 or true
and 1 stay different, as they do in the format's typed columns. Inside the
nested values of a json column, numbers are JSON numbers: the canonical text
(RFC 8785) writes a whole float below 1e21 with its shortest digits and no
fraction, so a reader gets it back as an integer (100.0 as 100, 1e16 as
10000000000000000); the model reads them the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from combe.format.schema import Schema

Change = tuple[Any, "dict[str, Any] | None"]


def jsonl_line(key: Any, value: Any) -> str:
    return json.dumps({"key": key, "value": value}) + "\n"


def append_jsonl(path: Path, changes: Iterable[Change]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(jsonl_line(key, value) for key, value in changes)


def append_lines(path: Path, lines: Iterable[str]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)


def json_numbers(value: Any) -> Any:
    """A nested value as a reader of its canonical JSON text gets it back (see the module docstring)."""
    if isinstance(value, list):
        return [json_numbers(item) for item in value]
    if isinstance(value, dict):
        return {name: json_numbers(item) for name, item in value.items()}
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(Decimal(repr(value)))  # the shortest digits, as written: 5.023838750729234e16 -> ...340
    return value


def _without_nulls(value: Any) -> Any:
    """Objects without their null fields, at any depth (list items stay, null or not)."""
    if isinstance(value, dict):
        return {name: _without_nulls(field) for name, field in value.items() if field is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def canon(record: dict[str, Any] | None, key_field: str = "key") -> str | None:
    """One record's canonical form (see the module docstring); None for an absent record."""
    if record is None:
        return None
    fields = {name: json_numbers(value) if isinstance(value, (list, dict)) else value
              for name, value in record.items() if value is not None and name != key_field}
    return json.dumps(_without_nulls(fields), sort_keys=True)


def replay(changes: Iterable[Change], state: dict[Any, str] | None = None) -> dict[Any, str]:
    """The dict a reader replaying the log would hold: latest value per key, null deletes."""
    result = dict(state or {})
    for key, value in changes:
        if value is None:
            result.pop(key, None)
        else:
            result[key] = canon(value)  # type: ignore[assignment]
    return result


def table_state(table: pa.Table, schema: Schema) -> dict[Any, str]:
    """A state table (JSON columns as text) in the same canonical form as ``replay``."""
    json_columns = [name for name, kind in schema.columns.items() if kind == "json"]
    state: dict[Any, str] = {}
    for row in table.to_pylist():
        for name in json_columns:
            if row.get(name) is not None:
                row[name] = json.loads(row[name])
        key = row[schema.key_field]
        assert key not in state, f"key {key!r} twice in one state"
        state[key] = canon(row, schema.key_field)  # type: ignore[assignment]
    return state
