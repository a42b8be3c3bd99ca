"""Blob bytes: an Arrow IPC file compressed with zstd, content checksums on.

A small blob is one zstd frame. A large one is cut into frames of
``FRAME_BYTES`` of IPC data each, after a zstd *skippable* frame that lists
their sizes: any zstd decoder still reads the whole blob as one stream (it
skips the table and concatenates the frames), and combe decompresses the
frames in parallel, straight into one buffer, so a load is not bound to one
core's decompression speed. docs/FORMAT.md gives the bytes.

Pure functions on bytes and tables; no store access here. The sha256 of the
compressed bytes is what a manifest records and what readers verify before a
blob is used.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import pyarrow as pa
import zstandard

from .errors import FormatError, IntegrityError

ZSTD_LEVEL = 3
# A blob that claims to decompress to more than this is refused rather than allocated.
MAX_DECOMPRESSED = 64 * 2**30
# Below this size a blob is hashed and then decompressed; above it, both at once (see verified_ipc).
PARALLEL_FROM = 1 << 20
# IPC bytes per zstd frame in a multi-frame blob.
FRAME_BYTES = 8 << 20
# The skippable frame that starts a multi-frame blob: magic, payload length, then the table.
SKIPPABLE_MAGIC = 0x184D2A5C
TABLE_TAG = b"combe-frames-v1\0"


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def ipc_file_bytes(table: pa.Table) -> pa.Buffer:
    """The table as one Arrow IPC file with a single record batch (so readers can map it flat)."""
    sink = pa.BufferOutputStream()
    _write_ipc(sink, table)
    return sink.getvalue()


def _write_ipc(sink: pa.NativeFile | FrameWriter, table: pa.Table) -> None:
    # Table.combine_chunks leaves a column of one chunk as it is (ChunkedArray.combine_chunks would copy it).
    batches = table.combine_chunks().to_batches()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_batch(batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema))


class Sink(Protocol):
    """Where a copy of a blob's IPC file goes as it is written."""

    def write(self, data: memoryview) -> object: ...


class FrameWriter:
    """A file-like sink that compresses what is written to it ``frame_bytes`` at a time, as it comes.

    An Arrow IPC writer writes into it buffer by buffer, so a blob is built
    without the whole IPC file in memory: only the compressed frames are kept,
    back to back in one buffer, until ``finish`` puts the frame table before
    them (the table comes first in the blob, and needs every frame's size).
    Frames are compressed on every core at once, a few at a time, each by a
    compressor of its thread's own; they join the blob in order.
    """

    def __init__(self, *, level: int = ZSTD_LEVEL, frame_bytes: int = FRAME_BYTES, copy: Sink | None = None) -> None:
        self.level = level
        self.copy = copy  # also given every byte written, uncompressed (a blob cache file: format/cache.py)
        self.frame_bytes = frame_bytes
        self.pending = bytearray(frame_bytes)
        self.filled = 0
        self.blob = bytearray()
        self.sizes: list[tuple[int, int]] = []  # per frame: compressed size, decompressed size
        self.written = 0
        self.closed = False
        workers = os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="combe-zstd")
        # At most this many frames are compressed or waiting at once (each holds its input).
        self._ahead = workers + 1
        self._queued: deque[tuple[Future[bytes], int]] = deque()
        self._local = threading.local()

    def _compress(self, data: memoryview | bytearray) -> bytes:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = zstandard.ZstdCompressor(
                level=self.level, write_checksum=True, write_content_size=True)
        return compressor.compress(data)  # releases the GIL

    def _frame(self, data: memoryview | bytearray) -> None:
        """Queue ``data`` (which must stay unchanged until it is compressed) as the next frame."""
        self._queued.append((self._pool.submit(self._compress, data), len(data)))
        self.written += len(data)
        while len(self._queued) >= self._ahead:
            self._take()

    def _take(self) -> None:
        future, size = self._queued.popleft()
        frame = future.result()
        self.blob += frame
        self.sizes.append((len(frame), size))

    def write(self, data: bytes | memoryview | pa.Buffer) -> int:
        view = memoryview(data).cast("B")
        written = len(view)
        if self.copy is not None:
            self.copy.write(view)
        while len(view):
            if self.filled == 0 and len(view) >= self.frame_bytes:
                # A whole frame straight from the writer's buffer (the view keeps it alive until compressed).
                self._frame(view[:self.frame_bytes])
                view = view[self.frame_bytes:]
                continue
            take = min(len(view), self.frame_bytes - self.filled)
            self.pending[self.filled:self.filled + take] = view[:take]
            self.filled += take
            view = view[take:]
            if self.filled == self.frame_bytes:
                self._frame(self.pending)
                self.pending, self.filled = bytearray(self.frame_bytes), 0
        return written

    def flush(self) -> None:
        """Nothing to flush: frames are compressed whole."""

    def close(self) -> None:
        self.closed = True

    def tell(self) -> int:
        return self.written + self.filled

    def finish(self) -> bytearray:
        """The blob: one frame, or the frame table and the frames (docs/FORMAT.md).

        The frames are already in the buffer returned; the table is put in
        front of them in place, so the blob is never held twice.
        """
        if self.filled or not self.written:
            self._frame(memoryview(self.pending)[:self.filled])
            self.filled = 0
        try:
            while self._queued:
                self._take()
        finally:
            self._pool.shutdown(cancel_futures=True)
        self.pending = bytearray()
        blob, self.blob = self.blob, bytearray()
        if len(self.sizes) == 1:
            return blob
        entries = b"".join(struct.pack("<QQ", compressed, size) for compressed, size in self.sizes)
        table = TABLE_TAG + struct.pack("<I", len(self.sizes)) + entries
        blob[0:0] = struct.pack("<II", SKIPPABLE_MAGIC, len(table)) + table
        return blob


def compress(data: bytes | pa.Buffer, *, level: int = ZSTD_LEVEL, frame_bytes: int = FRAME_BYTES) -> bytearray:
    """Blob bytes for ``data``: one zstd frame, or a frame table and one frame per ``frame_bytes``."""
    writer = FrameWriter(level=level, frame_bytes=frame_bytes)
    writer.write(data)
    return writer.finish()


def _frame_table(data: bytes | bytearray, path: str) -> list[tuple[int, int, int, int]] | None:
    """(compressed start, compressed size, decompressed start, decompressed size) per frame, or None."""
    if len(data) < 8 or struct.unpack_from("<I", data)[0] != SKIPPABLE_MAGIC:
        return None
    (length,) = struct.unpack_from("<I", data, 4)
    table = memoryview(data)[8:8 + length]
    if bytes(table[:len(TABLE_TAG)]) != TABLE_TAG or len(table) < len(TABLE_TAG) + 4:
        raise IntegrityError(f"blob {path} starts with a skippable frame that is not a combe frame table", path=path)
    (count,) = struct.unpack_from("<I", table, len(TABLE_TAG))
    if len(table) != len(TABLE_TAG) + 4 + 16 * count:
        raise IntegrityError(f"blob {path} has a frame table of the wrong length", path=path)
    frames = []
    compressed, decompressed = 8 + length, 0
    for index in range(count):
        size, content = struct.unpack_from("<QQ", table, len(TABLE_TAG) + 4 + 16 * index)
        frames.append((compressed, size, decompressed, content))
        compressed, decompressed = compressed + size, decompressed + content
    if compressed != len(data):
        raise IntegrityError(f"blob {path}: its frame table covers {compressed} bytes of {len(data)}", path=path)
    return frames


def _decompress_frames(data: bytes | bytearray, frames: list[tuple[int, int, int, int]], path: str, *,
                       keep: bool = True) -> bytearray:
    """Every frame into its place in one buffer, on as many threads as there are cores.

    ``keep=False`` decompresses each frame into a scratch buffer of its thread and lets it go (``check_blob``):
    zstd checks each frame's content checksum all the same. Returns an empty buffer then.
    """
    total = sum(frame[3] for frame in frames)
    if total > MAX_DECOMPRESSED:
        raise FormatError(f"blob {path} claims {total} bytes decompressed; refusing", path=path)
    out = bytearray(total if keep else 0)
    target, source = memoryview(out), memoryview(data)
    errors: list[str] = []

    def work(mine: list[tuple[int, int, int, int]]) -> None:
        scratch = None if keep else memoryview(bytearray(max((frame[3] for frame in mine), default=0)))
        # readinto decompresses into the buffer with the GIL released, so the threads really run at once.
        for start, size, at, content in mine:
            place = target[at:at + content] if scratch is None else scratch[:content]
            try:
                reader = zstandard.ZstdDecompressor().stream_reader(source[start:start + size])
                filled = 0
                while filled < content:
                    count = reader.readinto(place[filled:])
                    if not count:
                        break
                    filled += count
                if filled != content or reader.read(1):  # reading on checks the frame's checksum too
                    errors.append(f"a frame holds other than the {content} bytes its table says")
            except zstandard.ZstdError as exc:
                errors.append(str(exc))

    workers = min(len(frames), os.cpu_count() or 1)
    threads = [threading.Thread(target=work, args=(frames[i::workers],), name="combe-unzstd", daemon=True)
               for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise IntegrityError(f"blob {path} does not decompress: {errors[0]}", path=path)
    return out


def check_blob(data: bytes | bytearray, *, path: str) -> None:
    """Check that a blob decompresses to the very bytes that were compressed, without keeping them.

    Every frame must carry a content checksum (the XXH64 of the bytes the
    compressor was given, which ``FrameWriter`` always writes) and its size;
    decompressing checks both. The cost is one decompression, on every core,
    holding one frame per thread: a writer proves what it is about to publish
    without decoding it again.
    """
    frames = _frame_table(data, path)
    if frames is None:
        try:
            content = zstandard.get_frame_parameters(data).content_size
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"blob {path} is not a valid zstd frame: {exc}", path=path) from exc
        frames = [(0, len(data), 0, content)]
    source = memoryview(data)
    for start, size, _, content in frames:
        try:
            params = zstandard.get_frame_parameters(source[start:start + size])
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"blob {path} holds a frame that is not zstd: {exc}", path=path) from exc
        if not params.has_checksum or params.content_size != content:
            raise IntegrityError(f"blob {path} holds a frame without a content checksum or size", path=path)
    _decompress_frames(data, frames, path, keep=False)


def encode_table(table: pa.Table, *, frame_bytes: int = FRAME_BYTES, copy: Sink | None = None) -> bytearray:
    """Blob bytes for ``table``, compressed frame by frame as the IPC writer produces them; ``copy`` is given
    the IPC file itself as it is made."""
    writer = FrameWriter(frame_bytes=frame_bytes, copy=copy)
    _write_ipc(writer, table)
    return writer.finish()


def verify(data: bytes, expected_sha256: str, *, path: str) -> None:
    _check_digest(sha256_hex(data), expected_sha256, path=path)


def _check_digest(actual: str, expected_sha256: str, *, path: str) -> None:
    if actual != expected_sha256:
        raise IntegrityError(
            f"blob {path} has sha256 {actual} but its manifest records {expected_sha256}; "
            "it was corrupted or replaced and will not be used",
            path=path,
        )


def decompress(data: bytes | bytearray, *, path: str) -> bytes | bytearray:
    """The Arrow IPC file bytes inside a blob."""
    frames = _frame_table(data, path)
    if frames is not None:
        return _decompress_frames(data, frames, path)
    try:
        params = zstandard.get_frame_parameters(data)
        if params.content_size > MAX_DECOMPRESSED:
            raise FormatError(f"blob {path} claims {params.content_size} bytes decompressed; refusing", path=path)
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_DECOMPRESSED)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"blob {path} is not a valid zstd frame: {exc}", path=path) from exc


def read_ipc(source: bytes | bytearray | pa.Buffer | pa.MemoryMappedFile, *, path: str) -> pa.Table:
    """The table in an Arrow IPC file; zero-copy from a buffer or a memory map."""
    try:
        reader = pa.ipc.open_file(pa.BufferReader(source) if not isinstance(source, pa.NativeFile) else source)
        return reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError) as exc:
        raise FormatError(f"blob {path} does not hold an Arrow IPC file: {exc}", path=path) from exc


def verified_ipc(data: bytes, expected_sha256: str, *, path: str) -> bytes | bytearray:
    """The IPC file bytes inside a blob, returned only once the blob's sha256 matched.

    Hashing and decompressing both release the GIL, so for a large blob the
    hash runs in a second thread while this one decompresses: on two cores
    the check then costs no time beyond the decompression a load needs anyway.
    The decompressed bytes are dropped unless the hash matches.
    """
    if len(data) < PARALLEL_FROM:
        verify(data, expected_sha256, path=path)
        return decompress(data, path=path)
    digest: list[str] = []
    hasher = threading.Thread(target=lambda: digest.append(sha256_hex(data)), name="combe-sha256", daemon=True)
    hasher.start()
    try:
        ipc = decompress(data, path=path)
    except FormatError:
        hasher.join()
        _check_digest(digest[0], expected_sha256, path=path)  # corrupted: say so by its sha256
        raise
    hasher.join()
    _check_digest(digest[0], expected_sha256, path=path)
    return ipc


def decode_blob(data: bytes, expected_sha256: str, *, path: str) -> pa.Table:
    """Verify, decompress and read a blob."""
    return read_ipc(verified_ipc(data, expected_sha256, path=path), path=path)
