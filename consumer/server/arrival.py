"""Whether the bytes of an HTTP/1.1 request received so far make a whole request: head, then body.

The serving worker (worker.py) reads requests in its event loop and gives a
connection to a thread only once its request is whole, so that no thread
ever waits on a slow client. This module only counts bytes: it finds the end
of the head, the body's length (Content-Length, or chunked framing walked
chunk by chunk) and stops there. It never refuses anything: a head it cannot
make sense of is handed on as it is, and gunicorn's parser, which reads it
next, answers the error.
"""

from __future__ import annotations

import enum
import re

HEAD_END = b"\r\n\r\n"
CRLF = b"\r\n"
# Longest chunk-size line walked (the size in hex and any extensions); a longer one is gunicorn's to refuse.
MAX_CHUNK_LINE = 4096
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Progress(enum.Enum):
    WAITING = "waiting"  # more bytes are needed
    WHOLE = "whole"  # head and body have arrived (bytes of a next request may follow)
    HAND_ON = "hand on"  # not whole, but no reason to wait: the thread reads the rest, or the parser refuses it


class Arrival:
    """Bytes of one request as they arrive; ``feed`` says whether to keep waiting.

    ``head_limit``: a head still unterminated past this many bytes is handed
    on (gunicorn's limits refuse it). ``body_limit``: a body declared or
    received past this many bytes is handed on without waiting for the rest
    (the app refuses it, 413, without reading it).
    """

    def __init__(self, head_limit: int, body_limit: int, data: bytes = b"") -> None:
        self.head_limit = head_limit
        self.body_limit = body_limit
        self.data = bytearray()
        self.head_end: int | None = None  # offset just past the blank line
        self.expects_continue = False
        self._length: int | None = None  # Content-Length, when the body is not chunked
        self._chunked = False
        self._scan = 0  # chunked: offset of the next chunk-size line
        self._decoded = 0  # chunked: bytes of body in the chunks walked so far
        self.progress = Progress.WAITING
        if data:
            self.feed(data)

    @property
    def started(self) -> bool:
        return bool(self.data)

    def feed(self, data: bytes) -> Progress:
        self.data += data
        if self.progress is not Progress.WAITING:
            return self.progress
        if self.head_end is None:
            # The terminator may straddle two reads: search from a little before the new bytes.
            at = self.data.find(HEAD_END, max(0, len(self.data) - len(data) - 3))
            if at < 0:
                if len(self.data) > self.head_limit:
                    self.progress = Progress.HAND_ON
                return self.progress
            self.head_end = at + len(HEAD_END)
            if not self._read_head(bytes(self.data[:at])):
                self.progress = Progress.HAND_ON
                return self.progress
            self._scan = self.head_end
        self.progress = self._body_progress()
        return self.progress

    def _read_head(self, head: bytes) -> bool:
        """Note the body's framing; False if the head is one to hand on as it is."""
        lengths, codings = [], []
        for line in head.split(CRLF)[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                return False
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
            elif name == b"expect":
                self.expects_continue = value.lower() == b"100-continue"
        if codings:
            if lengths or codings[-1] != b"chunked":
                return False  # ambiguous or unsupported framing: the parser refuses it
            self._chunked = True
        elif lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit():
                return False
            self._length = int(lengths[0])
            if self._length > self.body_limit:
                return False  # over the limit: answered 413 without waiting for it
        else:
            self._length = 0
        return True

    def _body_progress(self) -> Progress:
        assert self.head_end is not None
        received = len(self.data) - self.head_end
        if not self._chunked:
            assert self._length is not None
            return Progress.WHOLE if received >= self._length else Progress.WAITING
        data = self.data
        while True:
            eol = data.find(CRLF, self._scan, self._scan + MAX_CHUNK_LINE)
            if eol < 0:
                return Progress.HAND_ON if len(data) - self._scan >= MAX_CHUNK_LINE else Progress.WAITING
            size_text = bytes(data[self._scan:eol]).split(b";", 1)[0].strip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size_text):
                return Progress.HAND_ON  # not a chunk size: the parser refuses it
            size = int(size_text, 16)
            if self._decoded + size > self.body_limit:
                return Progress.HAND_ON  # over the limit: answered 413 without waiting for the rest
            if size == 0:
                # The last chunk, then trailer lines up to a blank line.
                if data[eol + 2:eol + 4] == CRLF:
                    return Progress.WHOLE
                end = data.find(HEAD_END, eol)
                if end >= 0:
                    return Progress.WHOLE
                return Progress.HAND_ON if len(data) - eol > self.head_limit else Progress.WAITING
            after = eol + 2 + size + 2
            if after > len(data):
                return Progress.WAITING
            if data[after - 2:after] != CRLF:
                return Progress.HAND_ON  # a chunk not closed by CRLF: the parser refuses it
            self._scan = after
            self._decoded += size
