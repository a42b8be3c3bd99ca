"""Generated record readers: one function per schema, so reading a row is one call with no per-column loop.

A record is read straight from the Arrow buffers through memoryviews, which
hand back Python ints and floats directly and decode strings from a slice,
far cheaper than a pyarrow scalar per value. The per-column expressions are
joined into one dict display and compiled once per View (``exec`` of source
built here from column *positions*; column names only ever appear as
``repr()`` literals, so no name can inject code).

Batches go columnwise instead: ``take`` the found rows of each column, turn
each column into a Python list in C (numpy ``tolist``), then one generated
comprehension zips them into dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from combe.format.jsontext import loads_all, loads_stored

from .buffers import byte_slicer, typed_view
from .nested import is_nested, nested_source

Record = dict[str, Any]


def value_source(i: int, array: pa.Array | None, kind: str, env: dict[str, Any],
                 wanted: str | None = None) -> tuple[list[str], str]:
    """Statements that load column ``i``'s words at row ``r``, and the expression of its value.

    Adds the names it uses to ``env``. The loads only depend on ``r``, so a
    record's loads are placed together before the dict is built: the memory
    misses of different columns then overlap instead of queueing one after
    another (a random row misses the cache once or twice per column).
    ``array`` is None for a column this snapshot lacks (added by a later
    version's schema): its value is None. ``kind`` is the column's type in
    the snapshot; a nested column is read as ``wanted`` (the View's type of
    it, nested.py), which may have grown since.
    """
    if array is None or kind == "null" or wanted == "null":
        return [], "None"
    if is_nested(kind):
        return [], nested_source(array, kind, wanted or kind, "r", env, f"n{i}_")
    offset, length = array.offset, len(array)
    buffers = array.buffers()
    at = f"r + {offset}" if offset else "r"
    loads: list[str] = []
    if kind in ("int64", "float64"):
        env[f"c{i}"] = typed_view(buffers[1], "q" if kind == "int64" else "d")[offset:offset + length]
        loads.append(f"x{i} = c{i}[r]")
        expr = f"x{i}"
    elif kind == "bool":
        env[f"b{i}"] = typed_view(buffers[1], "B")
        loads.append(f"x{i} = b{i}[({at}) >> 3]")
        expr = f"x{i} >> (({at}) & 7) & 1 == 1"
    else:
        env[f"o{i}"] = typed_view(buffers[1], "i")[offset:offset + length + 1]
        env[f"d{i}"], env[f"keep{i}"] = byte_slicer(buffers[2]), buffers[2]
        loads.append(f"s{i} = o{i}[r]; e{i} = o{i}[r + 1]")
        text = f"d{i}[s{i}:e{i}]"
        expr = text if kind == "binary" else f"_loads({text})" if kind == "json" else f"{text}.decode()"
    if array.null_count:
        env[f"v{i}"] = typed_view(buffers[0], "B")
        loads.append(f"n{i} = v{i}[({at}) >> 3]")
        expr = f"({expr} if n{i} >> (({at}) & 7) & 1 else None)"
    return loads, expr


def record_source(key_field: str, columns: list[tuple[str, tuple[list[str], str]]]) -> str:
    """One line: every column's loads, then ``return`` the record's dict display (the key as asked for)."""
    loads = [load for _, (column_loads, _) in columns for load in column_loads]
    items = [f"{key_field!r}: key", *(f"{name!r}: {expr}" for name, (_, expr) in columns)]
    return "; ".join([*loads, "return {" + ", ".join(items) + "}"])


def compile_function(source: str, name: str, env: dict[str, Any]) -> Callable[..., Any]:
    """Compile generated ``source`` defining ``name`` with ``env`` as its globals."""
    scope: dict[str, Any] = {"_loads": loads_stored, **env}
    exec(compile(source, f"<combe generated {name}>", "exec"), scope)  # noqa: S102 - source built here
    function: Callable[..., Any] = scope[name]
    return function


class ColumnReader:
    """Values of one column at many rows as a Python list (None for nulls), built in C where possible.

    Fixed-width values come from numpy views of the Arrow buffers (zero-copy;
    a fancy index and ``tolist``), validity bits are read for the asked rows
    only; strings go through Arrow ``take``.
    """

    def __init__(self, array: pa.Array | None, kind: str, wanted: str | None = None) -> None:
        self.array, self.kind = array, kind
        if array is None or kind == "null" or wanted == "null":
            self.kind = "null"
            return
        if is_nested(kind):
            # One generated comprehension over the rows (nested.py): faster than to_pylist, and maps come as dicts.
            env: dict[str, Any] = {}
            expr = nested_source(array, kind, wanted or kind, "r", env, "n")
            self.nested = compile_function(f"def column(rows):\n    return [{expr} for r in rows]\n", "column", env)
            return
        buffers, offset, length = array.buffers(), array.offset, len(array)
        self.bits = None if not array.null_count else np.frombuffer(buffers[0], np.uint8)
        self.offset = offset
        if kind in ("int64", "float64"):
            self.values_np = np.frombuffer(buffers[1], np.int64 if kind == "int64" else np.float64,
                                           count=length, offset=offset * 8) if length else np.zeros(0)
        elif kind == "bool":
            self.values_np = np.frombuffer(buffers[1], np.uint8) if length else np.zeros(0, np.uint8)

    def _bit(self, bits: np.ndarray, rows: np.ndarray) -> np.ndarray:
        at = rows + self.offset
        return (bits[at >> 3] >> (at & 7).astype(np.uint8)) & 1

    def values(self, rows: np.ndarray, indices: pa.Array) -> list[Any]:
        """``rows`` as numpy int64, ``indices`` the same rows as an Arrow array."""
        kind, array = self.kind, self.array
        if array is None or kind == "null":
            return [None] * len(rows)
        if is_nested(kind):
            return self.nested(rows.tolist())
        if kind in ("string", "binary", "json"):
            taken = array.take(indices)
            if kind == "json":
                return loads_all(taken.to_pylist())
            return taken.to_numpy(zero_copy_only=False).tolist()
        if kind == "bool":
            out = self._bit(self.values_np, rows).astype(bool).tolist()
        else:
            out = self.values_np[rows].tolist()
        if self.bits is not None:
            for i in np.flatnonzero(self._bit(self.bits, rows) == 0).tolist():
                out[i] = None
        return out


def python_values(array: pa.Array, kind: str) -> list[Any]:
    """Every value of ``array`` (a column of combe type ``kind``) as a reader returns it: JSON parsed, maps as dicts."""
    if kind == "json":
        return loads_all(array.to_pylist())
    if is_nested(kind):
        return ColumnReader(array, kind).values(np.arange(len(array)), array)
    return array.to_pylist()


def batch_builder(key_field: str, names: list[str]) -> Callable[[list[Any], list[list[Any]]], list[Record]]:
    """A function (keys, columns) -> one dict per key, zipping the column lists."""
    variables = [f"a{i}" for i in range(len(names))]
    record = "{" + ", ".join([f"{key_field!r}: key", *(f"{n!r}: {v}" for n, v in zip(names, variables))]) + "}"
    targets = ", ".join(["key", *variables]) + ","
    source = (f"def build(keys, columns):\n"
              f"    return [{record} for {targets} in zip(keys, *columns)]\n")
    return compile_function(source, "build", {})
