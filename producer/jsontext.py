"""JSON decoding for record values: orjson when installed (about 3x faster), else the stdlib.

Decoding JSON is the producer's largest per-message cost. Both paths accept
only standard JSON: the stdlib's NaN/Infinity extensions are refused so a
record is not valid with one library and invalid with the other.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson

    HAVE_ORJSON = True
except ImportError:  # the kafka extra installs it; file sources work without
    HAVE_ORJSON = False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _stdlib_loads(data: bytes | str) -> Any:
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


if HAVE_ORJSON:
    _fast = orjson.loads
    _fast_error = orjson.JSONDecodeError

    def loads(data: bytes | str) -> Any:
        """Decode one JSON document; ValueError with the parser's reason if it is not valid."""
        try:
            return _fast(data)
        except _fast_error as exc:
            raise ValueError(str(exc)) from None
else:
    def loads(data: bytes | str) -> Any:
        """Decode one JSON document; ValueError with the parser's reason if it is not valid."""
        try:
            return _stdlib_loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(str(exc)) from None
