"""An HTTP proxy for tests that sits between S3 clients and the S3 server and misbehaves on cue.

Clients use the proxy's ``url`` as their endpoint; it relays each request to ``upstream``
unchanged (including the Host header, which the request signature covers). Tests tell it at
run time to answer 500/503 with an S3 error body, to delay answers, or to drop connections
without answering (before relaying, or after: the server acted but the client never hears), for
the next N requests or until ``clear()``; optionally only requests of one method whose path
contains a given text (``method="PUT", path="/versions/"``: the manifest write). It logs every
exchange, so a test can count GETs or check that an answer carried no body.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from tests.support.service import Service

# Headers that describe one hop, not the message; the proxy does its own framing and answers
# ``Expect: 100-continue`` itself.
_HOP_HEADERS = {
    "connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "expect",
}

_S3_ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


@dataclass(frozen=True)
class Exchange:
    """One request the proxy saw; ``status`` is None for a dropped connection."""

    method: str
    path: str
    status: int | None
    body_bytes: int


@dataclass
class _Fault:
    kind: str  # "fail", "delay" or "drop"
    remaining: int | None  # requests left to affect; None until cleared
    status: int = 0
    seconds: float = 0.0
    relay_first: bool = False  # for "drop": let the server act, then lose its answer
    method: str | None = None  # affect only requests of this method...
    path: str | None = None  # ...whose path contains this

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or self.path in path)


class FaultProxy(Service):
    """Relay to ``upstream`` (``http://host:port``) from a free port on 127.0.0.1."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._lock = threading.Lock()
        self._fault: _Fault | None = None
        self._exchanges: list[Exchange] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True  # stop() does not wait out an answer being delayed
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fault-proxy",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()


    # -- faults -------------------------------------------------------------

    def fail(self, status: int = 503, times: int | None = None, *, method: str | None = None,
             path: str | None = None) -> None:
        """Answer ``status`` (500 or 503) with an S3 error body instead of relaying."""
        if status not in _S3_ERRORS:
            raise ValueError(f"status must be one of {sorted(_S3_ERRORS)}")
        self._set(_Fault("fail", times, status=status, method=method, path=path))

    def delay(self, seconds: float, times: int | None = None, *, method: str | None = None,
              path: str | None = None) -> None:
        """Relay, but hold the answer back for ``seconds``."""
        self._set(_Fault("delay", times, seconds=seconds, method=method, path=path))

    def drop(self, times: int | None = None, after_relay: bool = False, *, method: str | None = None,
             path: str | None = None) -> None:
        """Close the connection without answering: before relaying, or after (the server acted)."""
        self._set(_Fault("drop", times, relay_first=after_relay, method=method, path=path))

    def clear(self) -> None:
        """Relay faithfully again and forget the exchanges seen so far."""
        with self._lock:
            self._fault = None
            self._exchanges.clear()

    def _set(self, fault: _Fault) -> None:
        with self._lock:
            self._fault = fault

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        """The fault for this request if it applies to it, counting it against the fault's budget."""
        with self._lock:
            fault = self._fault
            if fault is None or not fault.matches(method, path):
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._fault = None
            return fault

    # -- log ----------------------------------------------------------------

    def exchanges(self, method: str | None = None) -> list[Exchange]:
        """Exchanges so far, oldest first, optionally only one method's."""
        with self._lock:
            return [e for e in self._exchanges if method is None or e.method == method]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests (of ``method``, for ``path``) reached the proxy."""
        return sum(1 for e in self.exchanges(method) if path is None or e.path == path)

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)

    # -- relaying -----------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 so clients keep pooled connections, as they do with S3.
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._handle(self)

            do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass  # tests read the exchange log instead of stderr noise

        return Handler

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        method, path = request.command, request.path
        if "chunked" in request.headers.get("Transfer-Encoding", ""):
            raise NotImplementedError("the fault proxy relays only Content-Length request bodies")
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        fault = self._take_fault(method, path)
        if fault is not None and fault.kind == "drop":
            if fault.relay_first:
                self._relay(method, path, request, body)
            self._record(Exchange(method, path, None, 0))
            request.close_connection = True
            request.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.kind == "fail":
            code, message = _S3_ERRORS[fault.status]
            status, headers = fault.status, [("Content-Type", "application/xml")]
            payload = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                "<RequestId>fault-proxy</RequestId></Error>"
            ).encode()
        else:
            status, headers, payload = self._relay(method, path, request, body)
        self._record(Exchange(method, path, status, len(payload)))
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        try:
            request.send_response_only(status)
            for name, value in headers:
                request.send_header(name, value)
            if method != "HEAD":
                request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)
        except ConnectionError:
            request.close_connection = True  # the client gave up waiting (e.g. a delay test)

    def _relay(
        self, method: str, path: str, request: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send the request upstream on a fresh connection; the answer's status, headers, body."""
        upstream = http.client.HTTPConnection(*self._upstream, timeout=30)
        try:
            # Keep the client's Host header: it is part of the signed request.
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
            upstream.request(method, path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_HEADERS]
            if method == "HEAD" and response.getheader("Content-Length") is not None:
                kept.append(("Content-Length", response.getheader("Content-Length", "0")))
            return response.status, kept, payload
        finally:
            upstream.close()
