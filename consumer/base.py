"""A loaded snapshot: its columns, its key index, and finding rows by key.

Nothing here runs per record at load time. The key index comes from the
snapshot (the producer built it; format/index.py); one lookup hashes one key,
reads a few int32s from the mapped index and compares one key's bytes. The
lookup is generated source (see rows.py) so that it costs one call; a View
fuses it with reading the record. Batches are found with numpy: int64 keys by
binary search of the sorted key column, string keys through the hash index,
resolving bucket chains for all keys at once.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from combe.format.index import build_index, split_index
from combe.format.schema import Schema
from combe.format.types import type_of_field

from .buffers import byte_slicer, typed_view
from .rows import ColumnReader

if TYPE_CHECKING:
    from .indexes import BaseIndex, Fields


class Base:
    """A snapshot's data table (sorted by key, one chunk per column) with its key index.

    ``columns`` keeps only those value columns (the key column always): the
    others are dropped before anything reads them, so with a memory-mapped
    file their pages are never touched.
    """

    def __init__(self, table: pa.Table, schema: Schema, columns: Collection[str] | None = None) -> None:
        data, rows, ends = split_index(table)
        if columns is not None:
            data = data.select([n for n in data.column_names if n == schema.key_field or n in columns])
        data = data.combine_chunks()
        self.table = data
        self.key_field = schema.key_field
        self.key_type = schema.key_stored
        self.count = data.num_rows
        self.arrays: dict[str, pa.Array] = {
            f.name: data.column(f.name).chunk(0) if data.column(f.name).num_chunks else pa.array([], f.type)
            for f in data.schema}
        self.kinds: dict[str, str] = {f.name: type_of_field(f) for f in data.schema}
        self.keys = self.arrays[schema.key_field] if schema.key_field in self.arrays else \
            pa.array([], schema.to_arrow().field(schema.key_field).type)
        if rows is None or ends is None:  # a snapshot from a writer that built no index
            built = build_index(self.keys, schema.key_stored)
            rows, ends = built[0].to_numpy(), built[1].to_numpy()
        self.index_rows: np.ndarray = rows
        self.index_ends: np.ndarray = ends
        self.lookup_env: dict[str, Any] = {
            "_crc": zlib.crc32, "_N": self.count,
            "_rows": typed_view(pa.py_buffer(rows), "i"), "_ends": typed_view(pa.py_buffer(ends), "i"),
        }
        offset = self.keys.offset
        if self.key_type == "int64":
            self.lookup_env["_kv"] = typed_view(self.keys.buffers()[1], "q")[offset:offset + self.count]
            self._sorted_keys = self.keys.to_numpy()
        else:
            self.lookup_env["_ko"] = typed_view(self.keys.buffers()[1], "i")[offset:offset + self.count + 1]
            self.lookup_env["_kd"] = byte_slicer(self.keys.buffers()[2])
            self.lookup_env["_keep_kd"] = self.keys.buffers()[2]
        # Secondary indexes over these rows, shared by every View on this Base (indexes.py).
        self.indexes: dict[Fields, BaseIndex] = {}
        self.index_lock = threading.Lock()
        self._readers: dict[tuple[str, str], ColumnReader] = {}  # (column, type wanted) -> reader

    def column_reader(self, name: str, wanted: str) -> ColumnReader:
        """The batch reader of column ``name`` as a View of type ``wanted`` reads it, made once per Base."""
        found = self._readers.get((name, wanted))
        if found is None:
            kind = self.kinds.get(name, wanted)
            found = self._readers[(name, wanted)] = ColumnReader(self.arrays.get(name), kind, wanted)
        return found

    @property
    def nbytes(self) -> int:
        """Bytes of the columns and the key index (mapped or in memory)."""
        return int(self.table.nbytes + self.index_rows.nbytes + self.index_ends.nbytes)

    def lookup_source(self, hit: str, miss: str, indent: str = "    ") -> str:
        """The body of a function of ``key`` that runs ``hit`` with ``r`` = the key's row, else ``miss``.

        The key must already be of the dataset's key type; a key that cannot be
        stored (an int beyond int64, a str with lone surrogates) is a miss.
        """
        if not self.count:
            return f"{indent}{miss}\n"
        if self.key_type == "int64":
            encode, error, same = "b = key.to_bytes(8, 'little', signed=True)", "OverflowError", "_kv[r] == key"
        else:
            encode, error, same = "b = key.encode()", "UnicodeEncodeError", "_kd[_ko[r]:_ko[r + 1]] == b"
        lines = [
            "try:", f"    {encode}", f"except {error}:", f"    {miss}",
            "h = (_crc(b) * _N) >> 32",
            "for j in range(_ends[h - 1] if h else 0, _ends[h]):",
            "    r = _rows[j]",
            f"    if {same}:",
            f"        {hit}",
            miss,
        ]
        return "".join(f"{indent}{line}\n" for line in lines)

    def find_many(self, keys: list[Any], array: pa.Array) -> np.ndarray:
        """The row of every key (-1 where absent), for all keys at once; ``array`` holds the same keys."""
        count = len(keys)
        if not self.count or not count:
            return np.full(count, -1, np.int64)
        if self.key_type == "int64":
            # The key column is sorted (a snapshot's rows are in key order): binary search, no hashing.
            wanted = array.to_numpy()
            rows = np.searchsorted(self._sorted_keys, wanted)
            rows[rows == self.count] = 0
            return np.where(self._sorted_keys[rows] == wanted, rows, -1)
        hashes = np.fromiter(map(zlib.crc32, map(str.encode, keys)), np.uint64, count)
        buckets = ((hashes * np.uint64(self.count)) >> np.uint64(32)).astype(np.int64)
        ends = self.index_ends[buckets]
        starts = self.index_ends[buckets - 1]  # bucket 0 reads the last entry (-1): set right below
        starts[buckets == 0] = 0
        # Every candidate of every key in one pass (buckets hold about two rows for a present key):
        # ``owner`` is the key each candidate belongs to, ``candidates`` its row.
        sizes = ends - starts
        owner = np.repeat(np.arange(count), sizes)
        firsts = np.cumsum(sizes) - sizes
        candidates = self.index_rows[starts[owner] + np.arange(len(owner)) - firsts[owner]].astype(np.int64)
        same = pc.equal(array.take(owner), self.keys.take(candidates)).to_numpy(zero_copy_only=False)
        found = np.full(count, -1, np.int64)
        found[owner[same]] = candidates[same]
        return found
