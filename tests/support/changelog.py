"""Changelog files and the reference model they are checked against: replaying the log into a dict.

Records are compared in one canonical form: a record's fields without its key
and without null fields (a missing field and a null one are the same record to
combe, since a column added later reads as null in older rows), as sorted JSON
text so that 1 and 1.0 or true and 1 stay different, as they do in the format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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


def canon(record: dict[str, Any] | None, key_field: str = "key") -> str | None:
    """One record's canonical form (see the module docstring); None for an absent record."""
    if record is None:
        return None
    fields = {name: value for name, value in record.items() if value is not None and name != key_field}
    return json.dumps(fields, sort_keys=True)


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
