"""A loaded snapshot: its columns, and per-row access that reads only the row asked for.

Nothing here runs per record at load time. The key index comes from the
snapshot (the producer built it); lookups hash one key, read a few int32s
from the mapped index and compare one key's bytes. Values are read from the
Arrow buffers through memoryviews, which hand back Python ints, floats and
strings directly, far cheaper than a pyarrow scalar per value.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from combe.format.index import build_index, split_index
from combe.format.schema import Schema, type_of_field

Getter = Callable[[int], Any]


def _buffer_view(buffer: pa.Buffer | None, fmt: str) -> memoryview:
    return memoryview(buffer).cast(fmt) if buffer is not None and buffer.size else memoryview(b"").cast(fmt)


def _values(array: pa.Array, kind: str) -> Getter:
    """A function row -> Python value for one column, ignoring nulls."""
    offset = array.offset
    buffers = array.buffers()
    if kind == "null":
        return lambda i: None
    if kind in ("int64", "float64"):
        data = _buffer_view(buffers[1], "q" if kind == "int64" else "d")
        return data.__getitem__ if offset == 0 else (lambda i: data[i + offset])
    if kind == "bool":
        bits = _buffer_view(buffers[1], "B")
        return lambda i: bool(bits[(i + offset) >> 3] >> ((i + offset) & 7) & 1)
    offsets = _buffer_view(buffers[1], "i")
    data = _buffer_view(buffers[2], "B")
    if kind == "binary":
        return lambda i: bytes(data[offsets[i + offset]:offsets[i + offset + 1]])
    if kind == "json":
        return lambda i: json.loads(str(data[offsets[i + offset]:offsets[i + offset + 1]], "utf-8"))
    return lambda i: str(data[offsets[i + offset]:offsets[i + offset + 1]], "utf-8")


def column_getter(array: pa.Array, kind: str) -> Getter:
    """Like ``_values``, but None where the column is null."""
    get = _values(array, kind)
    if array.null_count == 0 or kind == "null":
        return get
    validity = _buffer_view(array.buffers()[0], "B")
    offset = array.offset
    return lambda i: get(i) if validity[(i + offset) >> 3] >> ((i + offset) & 7) & 1 else None


class Base:
    """A snapshot's data table (sorted by key, one chunk) with its key index."""

    def __init__(self, table: pa.Table, schema: Schema) -> None:
        data, rows, ends = split_index(table)
        data = data.combine_chunks()
        self.table = data
        self.key_field = schema.key_field
        self.key_type = schema.key_type
        self.count = data.num_rows
        keys = data.column(schema.key_field).chunk(0) if data.num_columns and data.column(0).num_chunks else \
            pa.array([], schema.to_arrow().field(schema.key_field).type)
        if rows is None or ends is None:  # a snapshot from a writer that built no index
            built = build_index(keys, schema.key_type)
            rows, ends = built[0].to_numpy(), built[1].to_numpy()
        self._rows = memoryview(rows).cast("B").cast("i") if len(rows) else memoryview(b"").cast("i")
        self._ends = memoryview(ends).cast("B").cast("i") if len(ends) else memoryview(b"").cast("i")
        self._getters = {f.name: column_getter(data.column(f.name).chunk(0), type_of_field(f))
                         for f in data.schema if data.column(f.name).num_chunks}
        if keys.type == pa.int64():
            self._key_at = _values(keys, "int64")
        else:
            self._key_offsets = _buffer_view(keys.buffers()[1], "i")
            self._key_data = _buffer_view(keys.buffers()[2], "B")
            self._key_offset = keys.offset

    def find(self, key: str | int) -> int:
        """The row holding ``key``, or -1."""
        count = self.count
        if not count:
            return -1
        if self.key_type == "int64":
            canonical = key.to_bytes(8, "little", signed=True)  # type: ignore[union-attr]
            bucket = (zlib.crc32(canonical) * count) >> 32
            start = self._ends[bucket - 1] if bucket else 0
            key_at = self._key_at
            for j in range(start, self._ends[bucket]):
                row = self._rows[j]
                if key_at(row) == key:
                    return row
            return -1
        encoded = key.encode()  # type: ignore[union-attr]
        bucket = (zlib.crc32(encoded) * count) >> 32
        start = self._ends[bucket - 1] if bucket else 0
        offsets, data, shift = self._key_offsets, self._key_data, self._key_offset
        for j in range(start, self._ends[bucket]):
            row = self._rows[j] + shift
            if data[offsets[row]:offsets[row + 1]] == encoded:
                return row - shift
        return -1

    def row_reader(self, schema: Schema) -> Callable[[str | int, int], dict[str, Any]]:
        """A function (key, row) -> the record as a dict in ``schema``'s columns (absent ones None)."""
        names = list(schema.columns)
        getters = [self._getters.get(name) for name in names]
        pairs = [(name, get) for name, get in zip(names, getters) if get is not None]
        missing = [name for name, get in zip(names, getters) if get is None]
        key_field = schema.key_field
        if not missing and names == [f for f in self._getters if f != key_field]:
            def read(key: str | int, row: int) -> dict[str, Any]:
                record = {key_field: key}
                for name, get in pairs:
                    record[name] = get(row)
                return record
            return read

        def read_evolved(key: str | int, row: int) -> dict[str, Any]:
            record: dict[str, Any] = {key_field: key}
            for name in names:
                get = self._getters.get(name)
                record[name] = get(row) if get is not None else None
            return record
        return read_evolved
