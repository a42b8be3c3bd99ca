"""One rule for int64 keys (format/keys.py): the producer, the consumer and the HTTP endpoint accept the same text."""

from __future__ import annotations

import re
import urllib.parse

import numpy as np
import pytest

from combe.consumer.server import create_app
from combe.format.errors import KeyTypeError
from combe.format.keys import INT64_TEXT, parse_int64
from combe.producer import RecordFormat
from combe.producer.records import Decoder
from tests.support.feed import Feed

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)

# text -> the key it names, or None where every layer must refuse it
TEXTS: dict[str, int | None] = {
    "1": 1, "-1": -1, "007": 7, "-0": 0, "0" * 30 + "1": 1,
    str(INT64_MAX): INT64_MAX, str(INT64_MIN): INT64_MIN,
    str(INT64_MAX + 1): None, str(INT64_MIN - 1): None, "9" * 4400: None,
    "\u0661": None,  # ARABIC-INDIC DIGIT ONE: int() reads it as 1
    "\uff11": None,  # FULLWIDTH DIGIT ONE
    " 1": None, "1 ": None, "1\n": None, "+1": None, "1_000": None, "": None, "-": None, "--1": None,
    "1.0": None, "0x10": None, "1e3": None,
}


@pytest.mark.parametrize("text, expected", TEXTS.items(), ids=[repr(t[:24]) for t in TEXTS])
def test_parse_int64_takes_ascii_digits_with_an_optional_minus_within_int64(text: str, expected: int | None) -> None:
    assert parse_int64(text) == expected
    assert parse_int64(text.encode()) == expected


def test_parse_int64_takes_integers_within_int64_and_nothing_else() -> None:
    for value in (0, INT64_MAX, INT64_MIN, np.int64(-5), np.uint8(7)):
        assert parse_int64(value) == int(value)
    for value in (INT64_MAX + 1, INT64_MIN - 1, True, False, 1.0, None, [1], b"\xff1"):
        assert parse_int64(value) is None


def test_the_regular_expression_states_the_same_rule_but_the_bounds() -> None:
    pattern = re.compile(INT64_TEXT)
    beyond = {str(INT64_MAX + 1), str(INT64_MIN - 1), "9" * 4400}
    for text, expected in TEXTS.items():
        assert (pattern.fullmatch(text) is not None) == (expected is not None or text in beyond), text[:24]


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Feed:
    feed = Feed(tmp_path_factory.mktemp("keys"), "numbers", key_type="int64")
    feed.publish([(1, {"n": "one"}), (-1, {"n": "minus one"}), (0, {"n": "zero"}), (7, {"n": "seven"}),
                  (INT64_MAX, {"n": "max"}), (INT64_MIN, {"n": "min"})])
    return feed


@pytest.mark.parametrize("text, expected", TEXTS.items(), ids=[repr(t[:24]) for t in TEXTS])
def test_producer_consumer_and_http_agree_on_every_text(feed: Feed, text: str, expected: int | None) -> None:
    decoder = Decoder(RecordFormat(key_type="int64"))
    with feed.consumer() as consumer:
        app = create_app(consumers=[consumer])
        try:
            client = app.test_client()
            path = f"/v1/datasets/numbers/records/{urllib.parse.quote(text, safe='')}"
            batch = client.post("/v1/datasets/numbers/records:batchGet", json={"keys": [text]})
            if expected is None:
                with pytest.raises(ValueError, match="not a 64-bit integer"):
                    decoder.key(text.encode())
                with pytest.raises(KeyTypeError):
                    consumer.get(text)
                with pytest.raises(KeyTypeError):
                    consumer.get_many([text] * 40)  # the batch path
                if text and "\n" not in text:  # the router matches neither an empty segment nor a newline
                    response = client.get(path)
                    assert response.status_code == 400, response.get_data(as_text=True)
                    assert response.get_json()["error"]["type"] == "KeyTypeError"
                assert batch.status_code == 400 and batch.get_json()["error"]["type"] == "KeyTypeError"
            else:
                assert decoder.key(text.encode()) == decoder.key(text) == expected
                record = {"key": expected, "n": {1: "one", 0: "zero", 7: "seven", INT64_MAX: "max",
                                                 INT64_MIN: "min", -1: "minus one"}[expected]}
                assert consumer.get(text) == consumer.get(expected) == record
                assert consumer.get_many([text] * 40) == [record] * 40
                response = client.get(path)
                assert response.status_code == 200 and response.get_json()["record"] == record
                assert batch.status_code == 200 and batch.get_json()["records"] == [record]
        finally:
            app.extensions["combe"].close()


def test_integers_beyond_int64_are_refused_by_every_layer(feed: Feed) -> None:
    decoder = Decoder(RecordFormat(key_type="int64"))
    with feed.consumer() as consumer:
        app = create_app(consumers=[consumer])
        try:
            client = app.test_client()
            for value in (INT64_MAX + 1, INT64_MIN - 1):
                with pytest.raises(ValueError, match="not a 64-bit integer"):
                    decoder.key(value)
                with pytest.raises(KeyTypeError):
                    consumer.get(value)
                with pytest.raises(KeyTypeError):
                    consumer.get_many([value] * 40)
                batch = client.post("/v1/datasets/numbers/records:batchGet", json={"keys": [value]})
                assert batch.status_code == 400 and batch.get_json()["error"]["type"] == "KeyTypeError"
        finally:
            app.extensions["combe"].close()
