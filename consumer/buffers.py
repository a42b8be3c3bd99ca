"""Python views of Arrow buffers, the primitives the generated readers (rows.py, nested.py) are made of."""

from __future__ import annotations

import ctypes
from typing import Any

import pyarrow as pa


def typed_view(buffer: pa.Buffer | None, fmt: str) -> memoryview:
    """A typed memoryview of an Arrow buffer (empty when the buffer is absent)."""
    raw = memoryview(buffer).cast("B") if buffer is not None and buffer.size else memoryview(b"")
    return raw.cast(fmt) if fmt != "B" else raw  # type: ignore[call-overload]


def byte_slicer(buffer: pa.Buffer | None) -> Any:
    """The buffer's bytes as a ctypes char array over the same memory: a slice of it is a ``bytes``.

    Slicing this is about twice as fast as slicing a memoryview and decoding
    it. It does not keep the buffer alive: the caller keeps ``buffer``.
    """
    if buffer is None or not buffer.size:
        return b""
    return (ctypes.c_char * buffer.size).from_address(buffer.address)
