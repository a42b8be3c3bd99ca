"""Blob bytes: an Arrow IPC file inside one zstd frame with its content checksum on.

Pure functions on bytes and tables; no store access here. The sha256 of the
compressed bytes is what a manifest records and what readers verify before a
blob is used; the zstd frame checksum also catches corruption of a cached
file after decompression.
"""

from __future__ import annotations

import hashlib
import threading

import pyarrow as pa
import zstandard

from .errors import FormatError, IntegrityError

ZSTD_LEVEL = 3
# A blob that claims to decompress to more than this is refused rather than allocated.
MAX_DECOMPRESSED = 64 * 2**30
# Below this size a blob is hashed and then decompressed; above it, both at once (see verified_ipc).
PARALLEL_FROM = 1 << 20


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def ipc_file_bytes(table: pa.Table) -> pa.Buffer:
    """The table as one Arrow IPC file with a single record batch (so readers can map it flat)."""
    sink = pa.BufferOutputStream()
    table = table.combine_chunks()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    return sink.getvalue()


def compress(data: bytes | pa.Buffer, *, level: int = ZSTD_LEVEL) -> bytes:
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True, threads=-1)
    return compressor.compress(memoryview(data))


def encode_table(table: pa.Table) -> bytes:
    """Blob bytes for ``table``."""
    return compress(ipc_file_bytes(table))


def verify(data: bytes, expected_sha256: str, *, path: str) -> None:
    _check_digest(sha256_hex(data), expected_sha256, path=path)


def _check_digest(actual: str, expected_sha256: str, *, path: str) -> None:
    if actual != expected_sha256:
        raise IntegrityError(
            f"blob {path} has sha256 {actual} but its manifest records {expected_sha256}; "
            "it was corrupted or replaced and will not be used",
            path=path,
        )


def decompress(data: bytes, *, path: str) -> bytes:
    """The Arrow IPC file bytes inside a blob."""
    try:
        params = zstandard.get_frame_parameters(data)
        if params.content_size > MAX_DECOMPRESSED:
            raise FormatError(f"blob {path} claims {params.content_size} bytes decompressed; refusing", path=path)
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_DECOMPRESSED)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"blob {path} is not a valid zstd frame: {exc}", path=path) from exc


def read_ipc(source: bytes | pa.Buffer | pa.MemoryMappedFile, *, path: str) -> pa.Table:
    """The table in an Arrow IPC file; zero-copy from a buffer or a memory map."""
    try:
        reader = pa.ipc.open_file(pa.BufferReader(source) if not isinstance(source, pa.NativeFile) else source)
        return reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError) as exc:
        raise FormatError(f"blob {path} does not hold an Arrow IPC file: {exc}", path=path) from exc


def verified_ipc(data: bytes, expected_sha256: str, *, path: str) -> bytes:
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
