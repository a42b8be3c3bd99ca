"""JSON text of values and records: orjson when installed, else the standard library, behind one import.

orjson writes and parses several times faster, and the producer's largest
per-message cost is decoding JSON, so it is used where present (the kafka
extra installs it). Each function here gives the same answer with either
library:

- ``json_text``: the canonical text of a value, RFC 8785 (JCS) with exact
  integers (docs/FORMAT.md, "Canonical JSON text"), so equal values compare
  equal as text and any writer stores the same bytes. orjson cannot write integers
  beyond 64 bits; those go through the stdlib.
- ``loads_record``: a record's value from a source, standard JSON only, with
  one behaviour whichever library reads it: NaN/Infinity, numbers beyond
  float64 (``1e400``) and lone surrogate escapes are refused; integers stay
  exact (orjson turns those beyond 64 bits into floats, so such documents are
  read by the stdlib); a document nested deeper than ``MAX_JSON_DEPTH`` is a
  ValueError, never a RecursionError.
- ``loads_stored`` / ``loads_all``: the values of a JSON column, which combe
  wrote itself; what orjson refuses there (integers beyond 64 bits) is read
  by the stdlib.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.encoder import encode_basestring as _quote  # the C escaper of json.dumps(ensure_ascii=False)
from typing import Any

try:
    import orjson
except ImportError:  # optional: the kafka extra installs it; everything works without
    orjson = None  # type: ignore[assignment]


def es_number(value: float) -> str:
    """A float as ECMAScript's Number::toString writes it (what RFC 8785 prescribes for JSON numbers).

    ``repr`` gives the shortest digits that read back as the same double, the
    closest of them to it (the digits ECMAScript picks too); only their layout
    differs: no ``.0``, no exponent from 1e-6 up to below 1e21, ``e+``/``e-``
    with no leading zeros beyond that.
    """
    if value != value or value in (_INF, -_INF):
        raise ValueError(f"{value} has no JSON text")
    if value == 0:
        return "0"  # -0 too
    text = repr(value)  # "123.45", "100.0", "1e-07", "-1.5e+300"
    if "e" not in text:  # 1e-4 <= |value| < 1e16: plain in both, only a whole number loses its ".0"
        return text.removesuffix(".0")
    if value < 0:
        return "-" + es_number(-value)
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    written = whole + fraction
    digits = written.lstrip("0")
    # value = 0.<digits> x 10^point: the decimal point falls after ``point`` of the digits.
    point = len(whole) + int(exponent or 0) - (len(written) - len(digits))
    digits = digits.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        return digits + "0" * (point - count)
    if 0 < point <= 21:
        return digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return "0." + "0" * -point + digits
    power = point - 1
    sign = "+" if power > 0 else "-"
    return (digits[0] + ("." + digits[1:] if count > 1 else "")) + "e" + sign + str(abs(power))


_INF = float("inf")
# Bytes that start the UTF-8 of U+E000 and above: the characters whose code point order (orjson's sort)
# and UTF-16 order (RFC 8785's) can differ.
_HIGH = re.compile(rb"[\xee-\xf4]")


def _utf16_order(name: str) -> bytes:
    """What RFC 8785 sorts object member names by: their UTF-16 code units (big-endian bytes compare alike)."""
    return name.encode("utf-16-be")


def canonical_text(value: Any) -> str:
    """The canonical JSON text of ``value`` (RFC 8785 with exact integers), without orjson: the reference.

    Strings go through the stdlib's C escaper, whose escapes are RFC 8785's
    (docs/FORMAT.md lists them).
    """
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is dict:
        names = sorted(value)
        if not all(map(str.isascii, names)):  # TypeError for a name that is not text
            names.sort(key=_utf16_order)  # code point and UTF-16 orders differ from U+E000 up
        return "{" + ",".join([_quote(name) + ":" + canonical_text(value[name]) for name in names]) + "}"
    if kind is list or kind is tuple:
        return "[" + ",".join([canonical_text(item) for item in value]) + "]"
    if value is None or kind is bool:
        return "null" if value is None else "true" if value else "false"
    if kind is int:
        return int.__repr__(value)  # exact, however large: JCS would round beyond 2^53 (FORMAT.md)
    if kind is float:
        return es_number(value)
    # Subclasses (an OrderedDict, an IntEnum) as their base type.
    if isinstance(value, str):
        return _quote(str(value))
    if isinstance(value, dict):
        return canonical_text(dict(value))
    if isinstance(value, (list, tuple)):
        return canonical_text(list(value))
    if isinstance(value, (int, float)):
        return canonical_text(int(value) if isinstance(value, int) else float(value))
    raise TypeError(f"a {kind.__name__} has no JSON text")


def _orjson_text(value: Any) -> str:
    """canonical_text, faster: orjson's text is already canonical unless it holds a float (orjson spells
    those its own way, always with a "." or an "e+"/"e-"), a null (orjson also writes NaN as null) or a
    character at or above U+E000. Text that merely looks so (a "." in a string) takes the reference."""
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # integers beyond 64 bits
        return canonical_text(value)
    if b"." in data or b"e+" in data or b"e-" in data or b"null" in data or (
            not data.isascii() and _HIGH.search(data)):
        return canonical_text(value)
    return data.decode()


json_text: Callable[[Any], str] = _orjson_text if orjson is not None else canonical_text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"the number {text[:40]} is beyond float64's range")
    return value


_INF = float("inf")
# A JSON document nested deeper than this is refused by both parsers alike (orjson's own limit is 1024).
MAX_JSON_DEPTH = 1000
TOO_DEEP = f"the JSON nests lists and objects deeper than {MAX_JSON_DEPTH} levels"
# 19 or more digits in a row may be an integer literal beyond 64 bits, which orjson reads as a float.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _stdlib_loads_record(data: bytes | str) -> Any:
    try:
        value = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None
    # A \uD800-style escape can decode to a lone surrogate, which is not text
    # and would fail much later, inside Arrow. Refuse it here, as orjson does.
    escape = b"\\ud" if isinstance(data, bytes) else "\\ud"
    if escape in data.lower():  # type: ignore[operator]
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ValueError("the JSON holds a lone surrogate escape, which is not valid text") from None
        except RecursionError:
            raise ValueError(TOO_DEEP) from None
    return value


def _orjson_loads_record(data: bytes | str) -> Any:
    """Decode one record's JSON document; ValueError with the parser's reason if it is not standard JSON.

    orjson reads an integer beyond 64 bits as a float; a document that may hold one is read again by the
    stdlib, which keeps integers exact, so that such an integer is refused (as an int64 value) either way.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc) or "depth" in str(exc):
            raise ValueError(TOO_DEEP) from None
        raise ValueError(str(exc)) from None
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw):
        return _stdlib_loads_checked(data)
    return value


def _stdlib_loads_checked(data: bytes | str) -> Any:
    """Decode one record's JSON document; ValueError with the parser's reason if it is not standard JSON."""
    try:
        return _stdlib_loads_record(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None


# Chosen once, not per call: this is the producer's per-record path.
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
