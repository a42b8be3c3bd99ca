"""The gunicorn worker of ``combe serve``: threads never wait on clients, and every refusal is JSON.

gunicorn's threaded worker gives a connection to a thread as soon as its
first bytes arrive, and the thread then blocks until the rest of the request
comes: a few clients that send half a request and stop hold every thread,
and everyone else waits. This worker reads each request, head and body, in
its event loop, where a waiting client costs a file descriptor and no
thread, and hands the connection to a thread only once the request is whole
(arrival.py). A request not whole within ``request_timeout`` seconds is
answered 408 and closed; TLS handshakes are done in the loop as well. In the
thread, body reads and response writes time out after ``request_timeout``
seconds per socket operation, against clients that stop reading.

gunicorn answers a request it cannot parse (request line too long: 414,
headers too large: 431, malformed: 400) with an HTML page; this worker
answers with the API's JSON error body instead, and never echoes a header
line back or into the log (it may carry a bearer token).

It builds on gunicorn's ThreadWorker (its connection objects, poller and
thread-pool hand-off), which is why the server extra pins gunicorn's major
version; tests/test_server_hostile.py exercises all of it over real sockets.
"""

from __future__ import annotations

import json
import logging
import selectors
import ssl
import time
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn import http as gunicorn_http
from gunicorn.http import errors as parse_errors
from gunicorn.sock import ssl_context
from gunicorn.workers.gthread import ThreadWorker

from .arrival import Arrival, Progress
from .errors import error_document

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
STOP_LINGER = 1.0  # seconds a stopping worker keeps connections that have sent nothing yet

# What gunicorn refused -> the status and what the client is told; the first match wins.
Kinds = type[BaseException] | tuple[type[BaseException], ...]
REFUSALS: tuple[tuple[Kinds, int, str], ...] = (
    (parse_errors.LimitRequestLine, 414, "the request line is longer than this server accepts"),
    (parse_errors.LimitRequestHeaders, 431, "the request headers are larger or more numerous than this server "
                                            "accepts"),
    (parse_errors.UnsupportedTransferCoding, 501, "the request's Transfer-Encoding is not supported"),
    (parse_errors.ExpectationFailed, 417, "the request's Expect header asks for what this server does not do"),
    (parse_errors.ForbiddenProxyRequest, 403, "proxy requests from this address are not allowed"),
    ((parse_errors.InvalidRequestLine, parse_errors.InvalidRequestMethod, parse_errors.InvalidHTTPVersion), 400,
     "the request line is not valid HTTP/1.1"),
    ((parse_errors.InvalidHeader, parse_errors.InvalidHeaderName, parse_errors.ObsoleteFolding), 400,
     "a request header is not valid HTTP/1.1"),
    ((parse_errors.InvalidChunkSize, parse_errors.ChunkMissingTerminator, parse_errors.InvalidChunkExtension), 400,
     "the request body's chunked encoding is malformed"),
    (parse_errors.ParseException, 400, "the request is not valid HTTP/1.1"),
    (ssl.SSLError, 400, "the TLS connection failed"),
)


def refusal(exc: BaseException) -> tuple[int, str]:
    """The status and message for an error gunicorn raised; 500 for anything it did not expect."""
    for kinds, status, message in REFUSALS:
        if isinstance(exc, kinds):
            return status, message
    return 500, "internal error; the server log has the details"


def error_response(status: int, kind: str, message: str) -> bytes:
    """A whole HTTP/1.1 response carrying the API's JSON error body; the connection closes after it."""
    body = json.dumps(error_document(status, kind, message)).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


@dataclass
class _Reading:
    """A connection whose next request is being read in the event loop."""

    arrival: Arrival
    deadline: float
    handshaking: bool = False
    wants_write: bool = False  # the TLS handshake waits to write: the poller watches for that too
    registered: bool = False
    continued: bool = False  # "100 Continue" was sent, so gunicorn must not send it again


class CombeWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker with whole requests read in the event loop (see the module docstring).

    ``serve_gunicorn`` makes a subclass carrying the two limits below.
    """

    request_timeout: float = 10.0
    max_body_bytes: int = 1 << 20

    def init_process(self) -> None:
        # Only the loop thread touches _reading (gunicorn runs every poller callback there).
        self._reading: dict[Any, _Reading] = {}  # in order of arrival, so in order of deadline
        self._tls: ssl.SSLContext | None = ssl_context(self.cfg) if self.cfg.is_ssl else None
        cfg = self.cfg
        # The longest head gunicorn's parser accepts with these limits: one past it is sure to be refused.
        self._head_limit = cfg.limit_request_line + cfg.limit_request_fields * (cfg.limit_request_field_size + 2) + 4
        self._stopping_since: float | None = None
        super().init_process()  # runs the worker's loop: last

    # -- reading requests in the loop ------------------------------------------------

    def enqueue_req(self, conn: Any) -> None:
        """gunicorn calls this for a connection whose next request is due: read it here before a thread takes it."""
        reading = _Reading(Arrival(self._head_limit, self.max_body_bytes),
                           time.monotonic() + self.request_timeout)
        self._reading[conn] = reading
        conn.sock.setblocking(False)
        if self._tls is not None and not conn.initialized:
            conn.sock = self._tls.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False,
                                              suppress_ragged_eofs=self.cfg.suppress_ragged_eofs)
            reading.handshaking = True
        ahead = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        if ahead and self._received(conn, reading, ahead):
            return  # the previous read had fetched all of this request already
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))
        reading.registered = True
        if isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
            self._readable(conn, conn.sock)  # decrypted bytes already inside TLS: the poller would not wake for them

    def _readable(self, conn: Any, fileobj: Any) -> None:
        reading = self._reading[conn]
        try:
            if reading.handshaking:
                conn.sock.do_handshake()
                reading.handshaking = False
                if reading.wants_write:
                    reading.wants_write = False
                    self.poller.modify(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))
            data = conn.sock.recv(READ_SIZE)
            while data and isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                data += conn.sock.recv(READ_SIZE)  # decrypted bytes the poller cannot see
        except (ssl.SSLWantReadError, BlockingIOError):
            return  # a partial TLS record, or a wake-up with nothing to read: wait for more
        except ssl.SSLWantWriteError:
            reading.wants_write = True
            self.poller.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, partial(self._readable, conn))
            return
        except OSError as exc:  # ssl.SSLError included: a failed handshake or a reset connection
            log.debug("dropping a connection while reading its request: %s", exc)
            self._drop(conn)
            return
        if not data:
            self._drop(conn)  # the client closed the connection
            return
        self._received(conn, reading, data)

    def _received(self, conn: Any, reading: _Reading, data: bytes) -> bool:
        """Add ``data``; hand the connection to a thread once the request is whole. True once handed on."""
        progress = reading.arrival.feed(data)
        if progress is Progress.WAITING:
            if reading.arrival.expects_continue and not reading.continued and reading.arrival.head_end is not None:
                reading.continued = True
                self._send(conn, CONTINUE)  # the client waits for it before it sends the body
            return False
        if reading.registered:
            self.poller.unregister(conn.sock)
        del self._reading[conn]
        if conn.parser is None:
            conn.parser = gunicorn_http.get_parser(self.cfg, conn.sock, conn.client)
            conn.initialized = True  # the socket is ready (TLS done here): gunicorn must not set it up again
        conn.parser.unreader.unread(bytes(reading.arrival.data))
        conn.combe_whole = progress is Progress.WHOLE
        conn.combe_continued = reading.continued
        super().enqueue_req(conn)
        return True

    def _send(self, conn: Any, data: bytes) -> None:
        """Best effort, without blocking the loop: a small answer fits the socket's buffer."""
        try:
            conn.sock.send(data)
        except OSError as exc:
            log.debug("could not write to a client: %s", exc)

    def _drop(self, conn: Any) -> None:
        reading = self._reading.pop(conn)
        if reading.registered:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass  # the socket is gone already
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """gunicorn's expiry of idle connections, plus requests that did not arrive whole in time.

        Called by the loop about once a second. A stopping worker stops
        listening, and closes the connections that have sent nothing yet
        after STOP_LINGER seconds.
        """
        super().murder_pending()
        now = time.monotonic()
        if not self.alive and self._stopping_since is None:
            self._stopping_since = now
            # Stop listening at once: new connections are refused (a client or balancer tries elsewhere)
            # rather than left in a queue that no one will serve.
            self.set_accept_enabled(False)
            for listener in self.sockets:
                listener.close()
        # Connections accepted just before the stop may hold bytes the loop has not read yet: they get a moment.
        idle_until = self._stopping_since + STOP_LINGER if self._stopping_since is not None else None
        for conn, reading in list(self._reading.items()):
            started = reading.arrival.started and not reading.handshaking
            if reading.deadline <= now:
                if started:
                    self._send(conn, error_response(408, "RequestTimeout", "the request did not arrive whole within "
                                                    f"{self.request_timeout:g} seconds"))
                self._drop(conn)
            elif not started and idle_until is not None and now >= idle_until:
                self._drop(conn)

    # -- in the thread -----------------------------------------------------------------

    def handle_request(self, req: Any, conn: Any) -> bool:
        if conn.combe_continued or not conn.combe_whole:
            # Sent already, or the body will not be read (over the limits): the answer comes instead of it.
            req._expected_100_continue = False
        conn.sock.settimeout(self.request_timeout)  # body reads and response writes, per operation
        return bool(super().handle_request(req, conn))

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        if not conn.combe_whole:
            return False  # the rest of a body over the limits is not read: close the connection instead
        try:
            return bool(super()._keepalive_after(conn, keepalive))
        except Exception as exc:  # noqa: BLE001 - the answer is sent: a body left unreadable only ends the connection
            log.debug("closing a connection whose request body could not be read to its end: %s", exc)
            return False

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer what gunicorn could not parse (or an unexpected failure) with a JSON error body."""
        status, message = refusal(exc)
        if status >= 500:
            log.error("error handling a request", exc_info=exc)
        else:
            # The exception's text is left out: it may quote a header line, and a header may hold a token.
            log.info("refused a request from %s: %d %s", (addr or ("?",))[0], status, type(exc).__name__)
        try:
            client.settimeout(self.request_timeout)
            client.sendall(error_response(status, type(exc).__name__, message))
        except OSError as err:
            log.debug("could not send the error response: %s", err)
