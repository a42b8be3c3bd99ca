"""``combe serve`` against slow, clumsy and hostile clients, over real sockets.

What must hold: a client that sends half a request (or half a body) holds no
thread, so everyone else is answered at once; every refusal is a JSON error
with the right 4xx status, never gunicorn's HTML page, a 5xx or a traceback.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.served import Published, fetch, publish_all, start_serve, stop

WORKERS, THREADS = 2, 2
REQUEST_TIMEOUT = 4.0
MAX_BODY = 2000


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    return publish_all(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def base(published: Published) -> Iterator[str]:
    process, base = start_serve(published, "--workers", str(WORKERS), "--threads", str(THREADS),
                                "--request-timeout", str(REQUEST_TIMEOUT), "--max-body-bytes", str(MAX_BODY))
    yield base
    code, err = stop(process)
    assert code == 0, err
    assert "Traceback" not in err, err


def address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def exchange(base: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a new connection; the response."""
    with socket.create_connection(address(base), timeout=15) as sock:
        sock.sendall(data)
        return read_response(sock)


def json_error(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"] == "application/json", body
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["status"] == status and error["type"] and error["message"], error
    return error


def elapsed_for(count: int, url: str) -> float:
    """Seconds for ``count`` GETs of ``url`` one after the other, each answered 200."""
    started = time.monotonic()
    for _ in range(count):
        assert fetch(url)[0] == 200
    return time.monotonic() - started


# -- slow clients -----------------------------------------------------------------------


@pytest.mark.slow  # waits out the server's client timeout
def test_half_sent_requests_hold_no_thread(base: str) -> None:
    # Three times as many half requests as the server has threads, queued before the next requests.
    slow = [socket.create_connection(address(base), timeout=REQUEST_TIMEOUT * 4)
            for _ in range(3 * WORKERS * THREADS)]
    try:
        for sock in slow:
            sock.sendall(b"GET /v1/datasets/counts/records/3 HTTP/1.1\r\nHost: test\r\n")
        # Answered at once, long before the half requests time out.
        assert elapsed_for(10, f"{base}/v1/datasets/counts/records/3") < REQUEST_TIMEOUT / 2
        # A half request that is finished in time is answered; the others are refused with 408.
        slow[0].sendall(b"\r\n")
        status, _, body = read_response(slow[0])
        assert status == 200 and json.loads(body)["record"]["n"] == 3
        for sock in slow[1:]:
            status, headers, body = read_response(sock)
            assert "whole within" in json_error(408, headers, body)["message"]
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.slow  # waits out the server's client timeout
def test_a_body_that_stops_halfway_holds_no_thread(base: str) -> None:
    head = (b"POST /v1/datasets/counts/records:batchGet HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 40\r\n\r\n")
    slow = [socket.create_connection(address(base), timeout=REQUEST_TIMEOUT * 4)
            for _ in range(3 * WORKERS * THREADS)]
    try:
        for sock in slow:
            sock.sendall(head + b'{"keys": [1, 2')
        assert elapsed_for(10, f"{base}/v1/datasets/movies/records/m4") < REQUEST_TIMEOUT / 2
        for sock in slow:
            status, headers, body = read_response(sock)
            json_error(408, headers, body)
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.slow  # waits out the server's client timeout
def test_connections_that_send_nothing_hold_no_thread(base: str) -> None:
    idle = [socket.create_connection(address(base), timeout=REQUEST_TIMEOUT * 4) for _ in range(3 * WORKERS * THREADS)]
    try:
        assert elapsed_for(10, f"{base}/healthz") < REQUEST_TIMEOUT / 2
        for sock in idle:
            assert sock.recv(100) == b""  # closed without an answer: there was no request to answer
    finally:
        for sock in idle:
            sock.close()


def test_expect_100_continue_gets_one_interim_answer(base: str) -> None:
    body = json.dumps({"keys": [1, 2, 99]}).encode()
    with socket.create_connection(address(base), timeout=15) as sock:
        sock.sendall(b"POST /v1/datasets/counts/records:batchGet HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200") and b"100 Continue" not in rest
    records = json.loads(rest.partition(b"\r\n\r\n")[2])["records"]
    assert [r and r["n"] for r in records] == [1, 2, None]


def test_a_body_over_the_limit_is_refused_before_it_is_sent(base: str) -> None:
    with socket.create_connection(address(base), timeout=15) as sock:
        sock.sendall(b"POST /v1/datasets/counts/records:batchGet HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 999999\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            received += chunk
    assert received.startswith(b"HTTP/1.1 413") and b"100 Continue" not in received


def test_pipelined_and_kept_alive_requests(base: str) -> None:
    host, port = address(base)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    for key in ("m2", "m3", "m4"):
        connection.request("GET", f"/v1/datasets/movies/records/{key}")
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["key"] == key
    connection.close()
    two = (b"GET /v1/datasets/counts/records/1 HTTP/1.1\r\nHost: test\r\n\r\n"
           b"GET /v1/datasets/counts/records/2 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    with socket.create_connection((host, port), timeout=15) as sock:
        sock.sendall(two)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert b'"n":1' in received and received.index(b'"n":1') < received.index(b'"n":2')


# -- refusals ---------------------------------------------------------------------------

BATCH = b"POST /v1/datasets/counts/records:batchGet HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"


def sized(body: bytes) -> bytes:
    return BATCH + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def chunked(*chunks: bytes) -> bytes:
    return BATCH + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunks)


REFUSED = {
    "request line too long": (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: test\r\n\r\n", 414),
    "header too large": (b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    "too many headers": (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101))
                         + b"\r\n", 431),
    "not HTTP": (b"GARBAGE\r\n\r\n", 400),
    "header without a colon": (b"GET /healthz HTTP/1.1\r\nHost: test\r\nno colon here\r\n\r\n", 400),
    "unknown transfer coding": (BATCH + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    "bad chunk size": (chunked(b"zz\r\nabc\r\n0\r\n\r\n"), 400),
    "chunk without its CRLF": (chunked(b"3\r\nabcXX0\r\n\r\n"), 400),
    "body nested 100k deep": (sized(b"[" * 100_000 + b"]" * 100_000), 413),  # over --max-body-bytes
    "keys nested 900 deep": (sized(b'{"keys": ' + b"[" * 900 + b"]" * 900 + b"}"), 400),
    "body over the limit, declared": (BATCH + b"Content-Length: 999999\r\n\r\n", 413),
    "body over the limit, chunked": (chunked(b"%x\r\n" % 3000, b"x" * 3000, b"\r\n0\r\n\r\n"), 413),
    "not JSON": (sized(b"{nope"), 400),
    "invalid UTF-8": (sized(b'{"keys": ["\xff"]}'), 400),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_are_json_with_their_4xx_status(base: str, case: str) -> None:
    request, expected = REFUSED[case]
    status, headers, body = exchange(base, request)
    assert status == expected, body
    json_error(expected, headers, body)


def test_bodies_that_break_the_json_parser_are_400(published: Published) -> None:
    """Within a larger body limit: a 5,000-digit integer and a body nested 100,000 deep."""
    process, base = start_serve(published, "--max-body-bytes", str(300_000), "--workers", "1")
    try:
        status, headers, body = exchange(base, sized(b'{"keys": [' + b"7" * 5000 + b"]}"))
        assert "digits" in json_error(400, headers, body)["message"]
        status, headers, body = exchange(base, sized(b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"))
        assert "nests" in json_error(400, headers, body)["message"]
        assert fetch(f"{base}/v1/datasets/counts/records/3")[0] == 200
    finally:
        code, err = stop(process)
    assert code == 0 and "Traceback" not in err, err
