"""arrival.py: when the bytes received make a whole request, however the network splits them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from combe.consumer.server.arrival import Arrival, Progress

HEAD_LIMIT, BODY_LIMIT = 2000, 100

WHOLE = {
    "no body": b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    "sized body": b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    "empty sized body": b"POST /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
    "chunked": b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
    "chunked with trailers": b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n",
    "chunked CRLFs inside the data":
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n\r\n\r\n\r\n0\r\n\r\n",
}


def fed(pieces: list[bytes]) -> list[Progress]:
    arrival = Arrival(HEAD_LIMIT, BODY_LIMIT)
    return [arrival.feed(piece) for piece in pieces]


@pytest.mark.parametrize("name", list(WHOLE))
@given(cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=12))
def test_whole_exactly_at_the_last_byte_however_it_is_split(name: str, cuts: list[int]) -> None:
    request = WHOLE[name]
    points = sorted({c for c in cuts if c < len(request)})
    pieces = [request[a:b] for a, b in zip([0, *points], [*points, len(request)])]
    assert fed(pieces) == [Progress.WAITING] * (len(pieces) - 1) + [Progress.WHOLE]
    assert fed([request[:-1]]) == [Progress.WAITING]


def test_bytes_of_a_next_request_may_follow() -> None:
    arrival = Arrival(HEAD_LIMIT, BODY_LIMIT, WHOLE["sized body"] + b"GET /next HTTP/1.1\r\n")
    assert arrival.progress is Progress.WHOLE and arrival.data.endswith(b"GET /next HTTP/1.1\r\n")


@pytest.mark.parametrize("request_bytes", [
    b"POST /x HTTP/1.1\r\nContent-Length: 101\r\n\r\n",  # declared over the body limit: refused unread
    b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",  # ambiguous
    b"POST /x HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST /x HTTP/1.1\r\nno colon\r\n\r\n",
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # not a chunk size
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n",  # Python's int() would take it
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",  # chunk not closed by CRLF
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + b"x" * 16 + b"\r\n70\r\n",  # over the limit
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffff\r\n",  # one chunk over the limit
    b"GET /" + b"a" * HEAD_LIMIT + b" HTTP/1.1\r\n",  # a head past the limit, unterminated
])
def test_handed_on_without_waiting_for_what_the_parser_refuses(request_bytes: bytes) -> None:
    assert fed([request_bytes]) == [Progress.HAND_ON]


def test_waits_for_a_body_and_notes_expect_continue() -> None:
    arrival = Arrival(HEAD_LIMIT, BODY_LIMIT)
    assert arrival.feed(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n") is Progress.WAITING
    assert arrival.expects_continue and arrival.head_end is not None
    assert arrival.feed(b"abc") is Progress.WHOLE
