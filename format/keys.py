"""What an int64 key may be written as: one rule for the producer, the consumer and the HTTP endpoint.

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

from .errors import KeyTypeError
from .schema import INT64_MAX, INT64_MIN

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


def lookup_key(raw: Any, key_type: str, where: str = "key") -> str | int:
    """A key given to a reader (``Consumer.get``, a URL, a JSON body) as the dataset stores it; KeyTypeError if it
    cannot be one. ``where`` names it in the message (``keys[3]``)."""
    if key_type == "string":
        if isinstance(raw, str):
            return raw
        raise KeyTypeError(f"{where} {raw!r} is a {type(raw).__name__}; this dataset's keys are strings")
    value = parse_int64(raw)
    if value is None:
        raise KeyTypeError(f"{where} {_shown(raw)} is not a 64-bit integer ({RULE}); this dataset's keys are int64")
    return value


def _shown(raw: Any) -> str:
    """The refused key in a message, cut short: it may be a whole request body's worth of text."""
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."
