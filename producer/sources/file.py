"""Changelog files: JSONL ``{"key": ..., "value": ...}`` lines or kcat-style ``key<delim>value`` lines.

The position is the byte offset after the last line folded, so publishing an
appended file again continues exactly where the announced version stopped.
A file that has become shorter than that offset was truncated or replaced:
continuing would skip or refold records, so it is an error. A last line with
no newline yet may be half written by an appending writer, so it is left for
the next run (with a warning); standard input (``-``) has ended when it
ends, so its last line is read, and it cannot be resumed: it is read whole
every time.

With ``full_state`` a JSONL file is a whole state instead: each line is a
row, a JSON object holding the key field among its columns, and the file is
read whole every cycle (its last line too: a row left out would read as a
deletion). Parquet, Arrow IPC and CSV files are whole states always
(producer/sources/tables.py); ``open_file`` picks the source by the suffix.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol, cast

from combe.format.errors import ConfigError, SourceError

from .base import Lines, Positions, Source
from .tables import TableFileSource, table_kind

log = logging.getLogger(__name__)

# Bytes of whole lines per chunk: large enough for the JSON reader's threads, small next to the state.
BLOCK_BYTES = 16 << 20
STDIN = "-"


class Readable(Protocol):
    """A binary input: a file opened "rb", or standard input's buffer."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int | None: ...


def open_file(uri: str, *, full_state: bool = False, **options: Any) -> Source:
    """The source of a file: a table file (a whole state), or JSONL or kcat-style lines."""
    kind = table_kind(uri)
    if kind is None:
        return FileSource(uri, full_state=full_state, **options)
    if not full_state:
        raise ConfigError(f"source {uri!r} is a {kind} file, which holds a whole state rather than changes: publish "
                          "it with full_state")
    return TableFileSource(uri, **options)


class FileSource(Source):
    def __init__(self, uri: str, *, key_delimiter: str | None = None, full_state: bool = False,
                 **_: object) -> None:
        """Options meant for other sources (Kafka client settings) are ignored."""
        self.uri = uri
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        self.path = None if path == STDIN else Path(path).expanduser().absolute()
        self.stream = "stdin" if self.path is None else str(self.path)
        self.delimiter = key_delimiter.encode() if key_delimiter else None
        if self.delimiter is not None:
            if full_state:
                raise ConfigError("key_delimiter reads changes as keys and values, but a whole state's lines "
                                  "are JSON objects holding the key field: give key_delimiter or full_state")
            self.no_key_hint = f"the line has no key delimiter {key_delimiter!r}"
        self.whole_state = full_state
        if self.path is not None and not self.path.is_file():
            raise SourceError(f"source file {self.path} does not exist or is not a file", source=uri)
        self._start = 0  # the byte offset the last read started at
        self._skipped: int | None = 0  # lines before it, once counted

    def describe(self, stream: str, partition: int, offset: int) -> str:
        return f"{stream} line {offset}"

    def number(self, stream: str, partition: int, offset: int) -> int:
        """The line in the file: the lines before where the read started are counted here, once, and only when
        a record must be named (counting them on every run would read the whole file each cycle)."""
        if self._skipped is None:
            self._skipped = 0
            if self.path is not None and self._start:
                with open(self.path, "rb") as handle:
                    self._skipped = sum(block.count(b"\n") for block in _prefix(handle, self._start))
        return self._skipped + offset

    def read(self, positions: Positions) -> Iterator[Lines]:
        if self.path is None:
            # A BufferedReader (typeshed's BinaryIO does not declare readinto).
            yield from self._blocks(cast(Readable, sys.stdin.buffer), start=0, line=1, end=None)
            return
        start = positions.get(self.stream, {}).get("0", 0)
        size = self.path.stat().st_size
        if size < start:
            raise SourceError(
                f"{self.path} is {size} bytes, shorter than the {start} bytes already published from it: "
                "it was truncated or replaced. Publish it to a new dataset, or restore the file.",
                source=self.uri,
            )
        self._start, self._skipped = start, None  # lines before ``start``: counted by number() if needed
        with open(self.path, "rb") as handle:
            handle.seek(start)
            # Read only what was there when the read began, even if a writer is appending.
            yield from _read_ahead(self._blocks(handle, start=start, line=1, end=size))

    def _blocks(self, handle: Readable, *, start: int, line: int, end: int | None) -> Generator[Lines, None, None]:
        """Blocks of about BLOCK_BYTES cut after a newline; a last line without one waits for the next run
        (a file being appended to), except on standard input, which has ended when it ends.

        Each block is read straight into a buffer of its own (no copy to join it to the part of a line
        carried over, none to cut it): the buffer is handed over with the block."""
        position = start
        carry = b""
        while True:
            want = BLOCK_BYTES if end is None else max(0, min(BLOCK_BYTES, end - position - len(carry)))
            data = bytearray(len(carry) + want)
            data[:len(carry)] = carry
            read = _fill(handle, memoryview(data)[len(carry):])
            del data[len(carry) + read:]
            if not read:
                if data and (end is None or self.whole_state):  # stdin's or a whole state's last line
                    yield Lines(self.stream, data, line, position + len(data))
                elif data:
                    log.warning("%s line %d has no newline yet; it is left for the next run "
                                "(end the file with a newline if it is complete)", self.stream,
                                line + data.count(b"\n"))
                return
            cut = data.rfind(b"\n") + 1
            carry = bytes(data[cut:])
            if cut == 0:
                continue
            del data[cut:]
            yield Lines(self.stream, data, line, position + len(data))
            line += data.count(b"\n")
            position += len(data)


def _read_ahead(blocks: Generator[Lines, None, None]) -> Iterator[Lines]:
    """``blocks``, each read on a thread of its own while the one before is decoded (reading a file releases
    the GIL); one block ahead at most. Once the caller stops, the block being read is waited for and the
    reading closed."""
    with ThreadPoolExecutor(1, thread_name_prefix="combe-read") as pool:
        ahead = pool.submit(next, blocks, None)
        try:
            while (block := ahead.result()) is not None:
                ahead = pool.submit(next, blocks, None)
                yield block
        finally:
            wait([ahead])
            blocks.close()


def _fill(handle: Readable, buffer: memoryview) -> int:
    """Read into ``buffer`` until it is full or the input ends; the bytes read."""
    filled = 0
    while filled < len(buffer):
        count = handle.readinto(buffer[filled:])
        if not count:
            break
        filled += count
    return filled


def _prefix(handle: Readable, limit: int, size: int = 1 << 20) -> Iterator[bytes]:
    """The first ``limit`` bytes in blocks, to count lines before a resume point."""
    remaining = limit
    while remaining > 0:
        block = handle.read(min(size, remaining))
        if not block:
            return
        remaining -= len(block)
        yield block
