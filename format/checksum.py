"""The state checksum: one sha256 over a table's logical content.

Two tables with the same rows in the same order, the same column names and
combe types, hash the same whatever their chunking, buffer offsets or the
bytes hidden under null slots. The producer records it for every version and
checks that applying a delta (or its reverse) reaches exactly that state.
docs/FORMAT.md gives the byte sequence.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import RESERVED_PREFIX, type_of_field

DOMAIN = b"combe-state-v1\n"


def _packed_bits(values: pa.Array) -> bytes:
    bits = values.to_numpy(zero_copy_only=False).astype(np.bool_)
    return np.packbits(bits, bitorder="little").tobytes()


def _column_bytes(kind: str, column: pa.Array, hasher: "hashlib._Hash") -> None:
    hasher.update(_packed_bits(column.is_valid()))
    if kind == "null":
        return
    if kind == "bool":
        hasher.update(_packed_bits(column.fill_null(False)))
    elif kind in ("int64", "float64"):
        hasher.update(column.fill_null(0).to_numpy(zero_copy_only=False).astype(f"<{'i8' if kind == 'int64' else 'f8'}").tobytes())
    else:
        filled = column.fill_null(b"" if kind == "binary" else "").cast(pa.large_binary())
        lengths = pc.binary_length(filled).to_numpy(zero_copy_only=False).astype("<i8")
        hasher.update(lengths.tobytes())
        offsets = np.frombuffer(filled.buffers()[1], dtype="<i8")[filled.offset:filled.offset + len(filled) + 1]
        data = filled.buffers()[2]
        if len(filled) and data is not None:
            hasher.update(memoryview(data)[int(offsets[0]):int(offsets[-1])])


def state_checksum(table: pa.Table) -> str:
    """``sha256:<hex>`` of the table's data columns (reserved ``__combe_`` columns excluded)."""
    hasher = hashlib.sha256(DOMAIN)
    hasher.update(table.num_rows.to_bytes(8, "little"))
    for arrow_field in table.schema:
        if arrow_field.name.startswith(RESERVED_PREFIX):
            continue
        kind = type_of_field(arrow_field)
        name = arrow_field.name.encode()
        hasher.update(len(name).to_bytes(4, "little") + name + kind.encode() + b"\n")
        _column_bytes(kind, table.column(arrow_field.name).combine_chunks(), hasher)
    return "sha256:" + hasher.hexdigest()
