"""The canonical JSON text of json columns: RFC 8785 (JCS) with exact integers, with orjson and without."""

from __future__ import annotations

import json
import re
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from combe.format import jsontext
from combe.format.jsontext import canonical_text, es_number
from tests.support.properties import examples

orjson = pytest.importorskip("orjson")  # the test extra installs it: both writers are tested here
WRITERS = {"reference": canonical_text, "orjson": jsontext._orjson_text}

# RFC 8785 appendix B: IEEE 754 bits -> the text ECMAScript's Number::toString gives.
RFC_NUMBERS = {
    0x0000000000000000: "0",
    0x8000000000000000: "0",
    0x0000000000000001: "5e-324",
    0x8000000000000001: "-5e-324",
    0x7FEFFFFFFFFFFFFF: "1.7976931348623157e+308",
    0xFFEFFFFFFFFFFFFF: "-1.7976931348623157e+308",
    0x4340000000000000: "9007199254740992",
    0xC340000000000000: "-9007199254740992",
    0x4430000000000000: "295147905179352830000",
    0x44B52D02C7E14AF5: "9.999999999999997e+22",
    0x44B52D02C7E14AF6: "1e+23",
    0x44B52D02C7E14AF7: "1.0000000000000001e+23",
    0x444B1AE4D6E2EF4E: "999999999999999700000",
    0x444B1AE4D6E2EF4F: "999999999999999900000",
    0x444B1AE4D6E2EF50: "1e+21",
    0x3EB0C6F7A0B5ED8C: "9.999999999999997e-7",
    0x3EB0C6F7A0B5ED8D: "0.000001",
    0x41B3DE4355555553: "333333333.3333332",
    0x41B3DE4355555554: "333333333.33333325",
    0x41B3DE4355555555: "333333333.3333333",
    0x41B3DE4355555556: "333333333.3333334",
    0x41B3DE4355555557: "333333333.33333343",
    0xBECBF647612F3696: "-0.0000033333333333333333",
    0x43143FF3C1CB0959: "1424953923781206.2",
}

# RFC 8785 section 3.2.2: the input, and its canonical text.
RFC_INPUT = r'''{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}'''
RFC_OUTPUT = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
              r'''"string":"€$\u000f\nA'B\"\\\\\"/"}''')

# RFC 8785 section 3.2.3: member names sorted by UTF-16 code units ("\ud83d\ude00" before "\ufb33").
RFC_SORT_INPUT = r'''{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}'''
RFC_SORT_ORDER = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001F600", "\ufb33"]


def double(bits: int) -> float:
    return float(struct.unpack("<d", bits.to_bytes(8, "little"))[0])


@pytest.mark.parametrize("writer", WRITERS)
def test_rfc_numbers(writer: str) -> None:
    for bits, text in RFC_NUMBERS.items():
        assert WRITERS[writer](double(bits)) == text, hex(bits)
        assert WRITERS[writer]([double(bits)]) == f"[{text}]", hex(bits)


@pytest.mark.parametrize("writer", WRITERS)
def test_rfc_example(writer: str) -> None:
    assert WRITERS[writer](json.loads(RFC_INPUT)) == RFC_OUTPUT


@pytest.mark.parametrize("writer", WRITERS)
def test_rfc_member_order(writer: str) -> None:
    text = WRITERS[writer](json.loads(RFC_SORT_INPUT))
    assert list(json.loads(text)) == RFC_SORT_ORDER
    assert text.startswith('{"\\r":"Carriage Return","1":"One","\u0080":"Control"')


@pytest.mark.parametrize("writer", WRITERS)
def test_integers_stay_exact(writer: str) -> None:
    """JCS would write 2^53 + 1 as the double nearest to it; combe keeps integers' digits (FORMAT.md)."""
    big = [2**53 + 1, -(2**63), 2**64 + 7, -(10**30)]
    assert WRITERS[writer](big) == "[9007199254740993,-9223372036854775808,18446744073709551623," \
                                   "-1000000000000000000000000000000]"


@pytest.mark.parametrize("writer", WRITERS)
def test_what_older_writers_spelled_otherwise(writer: str) -> None:
    """Python's repr and orjson wrote these differently before format version 2's canonical form."""
    value = {"a": [100.0, 1e16, 1e-7, 0.00001, -0.0, 1e21, 2.5], "\uffff": 1, "\U0001F600": 2}
    assert WRITERS[writer](value) == '{"a":[100,10000000000000000,1e-7,0.00001,0,1e+21,2.5],"\U0001F600":2,"\uffff":1}'


@pytest.mark.parametrize("writer", WRITERS)
def test_refused(writer: str) -> None:
    refused: list[Any] = [float("nan"), [float("inf")], {"a": -float("inf")}]
    for value in refused:
        with pytest.raises(ValueError):
            WRITERS[writer](value)
    for wrong in ({1: "a"}, {"a": object()}):
        with pytest.raises(TypeError):
            WRITERS[writer](wrong)


def test_json_text_is_the_canonical_writer() -> None:
    assert jsontext.json_text in WRITERS.values()


# ECMAScript's layouts of a number: digits with no exponent from 1e-6 up to below 1e21, otherwise one
# digit, an optional fraction and a signed exponent; never a trailing zero in a fraction, never "-0".
_PLAIN = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?")
_EXPONENT = re.compile(r"-?[1-9](\.[0-9]*[1-9])?e[+-][1-9][0-9]*")


@given(st.floats(allow_nan=False, allow_infinity=False))
@settings(max_examples=examples(2000))
def test_numbers_read_back_and_are_laid_out_as_ecmascript_does(value: float) -> None:
    text = es_number(value)
    assert float(text) == value
    exponent = value != 0 and not 1e-6 <= abs(value) < 1e21
    assert (_EXPONENT if exponent else _PLAIN).fullmatch(text), text
    assert text != "-0"
    # As few significant digits as the shortest round trip has (repr's).
    significant = re.sub(r"e.*|[-.]", "", text).strip("0")
    assert len(significant) == len(re.sub(r"e.*|[-.]", "", repr(abs(value))).strip("0")) or value == 0


_TEXT = st.text(st.characters(codec="utf-8"), max_size=8)  # any text: surrogates are not
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values: a number is a number, whether a parser makes it an int or a float
    (the text of the float 1e16 is 10000000000000000, which Python reads back as an int)."""
    if isinstance(a, float) or isinstance(b, float):
        return not isinstance(a, (bool, str)) and not isinstance(b, (bool, str)) and a is not None \
            and b is not None and float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@given(_VALUES)
@settings(max_examples=examples(1000))
def test_both_writers_agree_and_the_text_is_a_fixed_point(value: Any) -> None:
    text = canonical_text(value)
    assert jsontext._orjson_text(value) == text
    assert same(json.loads(text), value)
    assert canonical_text(json.loads(text)) == text  # what a reader parses back writes the same bytes
