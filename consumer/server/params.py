"""Reading request input: keys, limits, cursors, JSON bodies, query values. Every refusal is a 400 that says why.

Keys and values are checked against the dataset's types here, before any
lookup, so a malformed request never reaches the consumer or the store.
"""

from __future__ import annotations

import json
from typing import Any

from combe.format.errors import RequestError, RequestTooLarge
from combe.format.keys import lookup_key, parse_int64
from combe.format.types import kind as kind_of
from combe.format.types import list_item, map_types, struct_fields

from .checks import equality_only


def parse_value(text: str, kind: str, field: str) -> Any:
    """A query value from the URL, as a value of the field's column type."""
    if kind == "string":
        return text
    if kind == "int64":
        value = parse_int64(text)
        if value is None:
            raise RequestError(f"{field}={text!r}: {field} holds 64-bit integers")
        return value
    if kind == "float64":
        try:
            return float(text)
        except ValueError:
            raise RequestError(f"{field}={text!r}: {field} holds numbers") from None
    if kind == "bool" and text in ("true", "false"):
        return text == "true"
    if equality_only(kind):  # json and nested values are written as JSON in the URL
        value = parse_json(text.encode("utf-8", "surrogateescape"), f"{field}={text!r}")
        return value if kind == "json" else _from_json(value, kind, f"{field}={text!r}")
    raise RequestError(f"{field}={text!r}: {field} holds {kind} values, which cannot be queried from a URL"
                       if kind != "bool" else f"{field}={text!r}: use true or false")


def _from_json(value: Any, kind: str, what: str) -> Any:
    """A nested value as the JSON API writes it, back as a value of ``kind``: the keys of int64 maps are
    their decimal text in JSON. Anything else of the wrong type is left for the index to refuse by name."""
    head = kind_of(kind)
    if value is None:
        return None
    if head == "list" and isinstance(value, list):
        return [_from_json(item, list_item(kind), what) for item in value]
    if head == "struct" and isinstance(value, dict):
        fields = dict(struct_fields(kind))
        return {name: _from_json(item, fields[name], what) if name in fields else item for name, item in value.items()}
    if head == "map" and isinstance(value, dict):
        key_type, value_type = map_types(kind)
        out = {}
        for key, item in value.items():
            if key_type == "int64":
                number = parse_int64(key)
                if number is None:
                    raise RequestError(f"{what}: the keys of this map are 64-bit integers, not {key!r}")
                key = number
            out[key] = _from_json(item, value_type, what)
        return out
    return value


def parse_limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    value = parse_int64(raw)
    if value is None or not 1 <= value <= maximum:
        raise RequestError(f"limit={raw!r}: use a whole number from 1 to {maximum}")
    return value


def parse_cursor(raw: str | None, version: int | None = None) -> int:
    """A previous page's next_cursor: an offset, opaque to clients.

    Results that depend on the version served carry it in the cursor
    (``version.offset``), so a client paging across a refresh is told to
    start again instead of silently skipping or repeating records.
    """
    if raw is None:
        return 0
    at, dot, offset_text = raw.rpartition(".")
    offset, made_at = parse_int64(offset_text), parse_int64(at) if dot else None
    if (offset is None or offset < 0 or bool(dot) != (version is not None)
            or (dot and (made_at is None or made_at < 1))):
        raise RequestError(f"cursor={raw!r} is not a cursor this server handed out; "
                           "pass next_cursor from the previous page, or no cursor to start")
    if version is not None and made_at != version:
        raise RequestError(f"cursor={raw!r} belongs to version {at}, and version {version} is served now; "
                           "start again without a cursor")
    return offset


def next_cursor(offset: int, count: int, total: int, version: int | None = None) -> str | None:
    """The cursor after a page of ``count`` items from ``offset``; None on the last page."""
    end = offset + count
    if end >= total:
        return None
    return f"{version}.{end}" if version is not None else str(end)


def parse_json(data: bytes, what: str) -> Any:
    """JSON from a client: 400 for invalid JSON or UTF-8, nesting too deep, or a number too long to convert."""
    try:
        return json.loads(data)
    except RecursionError:
        raise RequestError(f"{what} nests JSON too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"{what} is not valid JSON: {exc}") from None
    except ValueError:  # an integer past Python's limit on digits it converts
        raise RequestError(f"{what} holds a number with thousands of digits") from None


def parse_batch(body: bytes, key_type: str, limit: int) -> list[str | int]:
    """The keys of a batchGet body ``{"keys": [...]}``."""
    document = parse_json(body, "the request body")
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise RequestError('the request body must be a JSON object {"keys": [...]}')
    keys = document["keys"]
    if len(keys) > limit:
        raise RequestTooLarge(f"the batch asks for {len(keys)} keys; this server answers at most {limit} "
                              "per request: split it")
    return [lookup_key(key, key_type, f"keys[{i}]") for i, key in enumerate(keys)]
