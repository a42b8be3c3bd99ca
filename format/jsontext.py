"""JSON text of values and records: orjson when installed, else the standard library, behind one import.

orjson writes and parses several times faster, and the producer's largest
per-message cost is decoding JSON, so it is used where present (the kafka
extra installs it). Each function here gives the same answer with either
library:

- ``json_text``: the canonical text of a nested value (sorted keys, no spaces,
  UTF-8), so equal values compare equal as text. orjson cannot write integers
  beyond 64 bits; those go through the stdlib.
- ``loads_record``: a record's value from a source, standard JSON only. The
  stdlib's NaN/Infinity extensions and lone surrogate escapes are refused, as
  orjson refuses them, so a record is not valid with one library and invalid
  with the other.
- ``loads_stored`` / ``loads_all``: the values of a JSON column, which combe
  wrote itself; what orjson refuses there (integers beyond 64 bits) is read
  by the stdlib.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

try:
    import orjson
except ImportError:  # optional: the kafka extra installs it; everything works without
    orjson = None  # type: ignore[assignment]


def _stdlib_json_text(value: Any) -> str:
    """The canonical JSON text of a nested value, so equal values compare equal as text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _orjson_text(value: Any) -> str:
    """The canonical JSON text of a nested value, so equal values compare equal as text."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:  # integers beyond 64 bits
        return _stdlib_json_text(value)


json_text: Callable[[Any], str] = _orjson_text if orjson is not None else _stdlib_json_text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _stdlib_loads_record(data: bytes | str) -> Any:
    value = json.loads(data, parse_constant=_refuse_constant)
    # A \uD800-style escape can decode to a lone surrogate, which is not text
    # and would fail much later, inside Arrow. Refuse it here, as orjson does.
    escape = b"\\ud" if isinstance(data, bytes) else "\\ud"
    if escape in data.lower():  # type: ignore[operator]
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ValueError("the JSON holds a lone surrogate escape, which is not valid text") from None
    return value


def _orjson_loads_record(data: bytes | str) -> Any:
    """Decode one record's JSON document; ValueError with the parser's reason if it is not standard JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None


def _stdlib_loads_checked(data: bytes | str) -> Any:
    """Decode one record's JSON document; ValueError with the parser's reason if it is not standard JSON."""
    try:
        return _stdlib_loads_record(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None


# Chosen once, not per call: this is the producer's per-message path.
loads_record: Callable[[bytes | str], Any] = _orjson_loads_record if orjson is not None else _stdlib_loads_checked


def loads_stored(text: bytes | str) -> Any:
    """A JSON column's value, as combe wrote it."""
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # integers beyond 64 bits: the stdlib reads them
    return json.loads(text)


def loads_all(texts: list[str | None]) -> list[Any]:
    """A JSON column's values (None stays None), parsed in one comprehension, not a call per value."""
    if orjson is not None:
        parse = orjson.loads
        try:
            return [None if text is None else parse(text) for text in texts]
        except orjson.JSONDecodeError:
            pass  # a value orjson refuses: parse them all with the fallback
    return [None if text is None else loads_stored(text) for text in texts]
