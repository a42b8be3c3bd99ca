"""The primary-key hash index a snapshot carries, so consumers map it instead of building it.

Hashing a key must give the same bucket in every process and language, so it
is CRC-32 (the zlib/ISO-HDLC polynomial) of the key's canonical bytes: UTF-8
for string keys, 8-byte little-endian two's complement for int64 keys.
``bucket = (crc * n) >> 32`` spreads n rows over n buckets without a modulo.
The index is two int32 columns of n entries, stored in the snapshot beside the
data columns: ``rows`` lists row numbers grouped by bucket, ``ends[b]`` is where
bucket b's group ends in ``rows`` (it starts at ``ends[b-1]``, or 0).
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .cores import each, spans
from .errors import FormatError

INDEX_ROWS = "__combe_index_rows"
INDEX_ENDS = "__combe_index_ends"
INDEX_SCHEME = b"crc32-fastrange-v1"
INDEX_METADATA = b"combe.index"
MAX_ROWS = 2**31 - 1
# Keys hashed at a time by one thread (hash_keys).
HASH_PIECE = 1 << 16

_CRC_TABLE = np.zeros(256, dtype=np.uint32)
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ (0xEDB88320 if _crc & 1 else 0)
    _CRC_TABLE[_byte] = _crc


def key_bytes(key: str | int, key_type: str) -> bytes:
    """The canonical bytes a key is hashed over."""
    if key_type == "int64":
        return int(key).to_bytes(8, "little", signed=True)
    return str(key).encode()


def key_hash(canonical: bytes) -> int:
    return zlib.crc32(canonical)


def _crc32_many(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """CRC-32 of every ``data[offsets[i]:offsets[i+1]]`` at once, one byte position per step.

    Up to the shortest length every string has a byte at the position, so those steps work on whole
    arrays; only the positions beyond it pick out the strings still running.
    """
    at = offsets[:-1].astype(np.int64)
    lengths = (offsets[1:] - offsets[:-1]).astype(np.int64)
    crc = np.full(len(at), 0xFFFFFFFF, dtype=np.uint32)
    shortest = int(lengths.min()) if len(lengths) else 0
    for _ in range(shortest):
        crc = _CRC_TABLE[crc.astype(np.uint8) ^ data[at]] ^ (crc >> 8)
        at += 1
    active = np.arange(len(at))
    position = shortest
    while len(active):
        active = active[lengths[active] > position]
        if not len(active):
            break
        current = crc[active]
        crc[active] = _CRC_TABLE[current.astype(np.uint8) ^ data[at[active]]] ^ (current >> 8)
        at[active] += 1
        position += 1
    return crc ^ np.uint32(0xFFFFFFFF)


def hash_keys(keys: pa.Array, key_type: str) -> np.ndarray:
    """CRC-32 of every key's canonical bytes, vectorised (the same values ``key_hash`` gives), a span of
    keys per core (format/cores.py)."""
    out = np.empty(len(keys), np.uint32)

    def part(span: tuple[int, int]) -> None:  # in pieces: each step's arrays stay small and in cache
        for start in range(span[0], span[1], HASH_PIECE):
            stop = min(start + HASH_PIECE, span[1])
            out[start:stop] = _hash_span(keys.slice(start, stop - start), key_type)

    each(part, spans(len(keys)))
    return out


def _hash_span(keys: pa.Array, key_type: str) -> np.ndarray:
    if key_type == "int64":
        raw = np.ascontiguousarray(keys.to_numpy(zero_copy_only=False).astype("<i8")).view(np.uint8)
        offsets = np.arange(0, 8 * (len(keys) + 1), 8, dtype=np.int64)
        return _crc32_many(raw, offsets)
    binary = keys.cast(pa.large_binary())
    offsets = np.frombuffer(binary.buffers()[1], dtype="<i8")[binary.offset:binary.offset + len(binary) + 1]
    data_buffer = binary.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return _crc32_many(data, offsets)


def build_index(keys: pa.Array, key_type: str) -> tuple[pa.Array, pa.Array]:
    """The ``rows`` and ``ends`` columns for keys in row order."""
    count = len(keys)
    if count > MAX_ROWS:
        raise FormatError(f"a snapshot holds at most {MAX_ROWS} records; this one has {count}")
    buckets = (hash_keys(keys, key_type).astype(np.uint64) * np.uint64(count)) >> np.uint64(32)
    rows = np.argsort(buckets, kind="stable").astype(np.int32)
    ends = np.cumsum(np.bincount(buckets.astype(np.int64), minlength=count)).astype(np.int32)
    return pa.array(rows, pa.int32()), pa.array(ends, pa.int32())


def with_index(table: pa.Table, key_field: str, key_type: str,
               index: tuple[np.ndarray, np.ndarray] | None = None) -> pa.Table:
    """The snapshot table: data columns, then the two index columns, and the scheme in metadata.

    ``index`` is the table's (rows, ends) when they are known already; else they are built.
    """
    rows, ends = (pa.array(part, pa.int32()) for part in index) if index is not None else \
        build_index(one_array(table.column(key_field)), key_type)
    indexed = table.append_column(pa.field(INDEX_ROWS, pa.int32(), nullable=False), rows)
    indexed = indexed.append_column(pa.field(INDEX_ENDS, pa.int32(), nullable=False), ends)
    return indexed.replace_schema_metadata({**(table.schema.metadata or {}), INDEX_METADATA: INDEX_SCHEME})


def split_index(table: pa.Table) -> tuple[pa.Table, np.ndarray | None, np.ndarray | None]:
    """Data columns, and the index arrays if the snapshot carries a scheme this reader knows."""
    metadata = table.schema.metadata or {}
    if INDEX_ROWS not in table.column_names or metadata.get(INDEX_METADATA) != INDEX_SCHEME:
        return table.drop_columns([c for c in (INDEX_ROWS, INDEX_ENDS) if c in table.column_names]), None, None
    rows, ends = (_values(table.column(name)) for name in (INDEX_ROWS, INDEX_ENDS))
    return table.drop_columns([INDEX_ROWS, INDEX_ENDS]), rows, ends


def one_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A column as one array, over its own buffers when it is one chunk (ChunkedArray.combine_chunks copies)."""
    if isinstance(column, pa.Array):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _values(column: pa.ChunkedArray) -> np.ndarray:
    """A column's values as numpy, over the blob's own buffer when it is one chunk."""
    return one_array(column).to_numpy()


def find_rows(keys: pa.Array | pa.ChunkedArray, key_type: str, table_keys: pa.Array | pa.ChunkedArray,
              rows: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The row of each key in a table through its index (``rows``, ``ends``), -1 where it has none.

    Vectorised over the keys: each key's bucket candidates are gathered at once
    and compared with Arrow, so finding k keys costs O(k) whatever the table
    holds (no hash set of the table's keys is built).
    """
    count = len(rows)
    found = np.full(len(keys), -1, np.int64)
    if count == 0 or len(keys) == 0:
        return found
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    buckets = ((hash_keys(keys, key_type).astype(np.uint64) * np.uint64(count)) >> np.uint64(32)).astype(np.int64)
    ends64 = ends.astype(np.int64)
    stop = ends64[buckets]
    start = np.where(buckets > 0, ends64[np.maximum(buckets - 1, 0)], 0)
    sizes = stop - start
    owner = np.repeat(np.arange(len(keys)), sizes)
    firsts = np.cumsum(sizes) - sizes
    slots = np.repeat(start - firsts, sizes) + np.arange(int(sizes.sum()))
    candidates = rows[slots].astype(np.int64)
    if not len(candidates):
        return found
    same = pc.equal(table_keys.take(pa.array(candidates)), keys.take(pa.array(owner)))
    hits = same.to_numpy(zero_copy_only=False) if isinstance(same, pa.Array) else \
        same.combine_chunks().to_numpy(zero_copy_only=False)
    found[owner[hits]] = candidates[hits]
    return found
