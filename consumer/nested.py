"""Generated readers of nested values (list, struct, map columns): Python lists and dicts from Arrow buffers.

A nested value is read like a scalar one in rows.py: an expression, built
here from the column's type and compiled into the View's ``get``, reads the
Arrow buffers through memoryviews, with no pyarrow scalar on the way. A list
of scalars is one comprehension over its offsets (a list of numbers without
nulls is one slice of a memoryview), a struct one dict display, a map one
dict comprehension; deeper shapes nest these expressions, at any depth.

The expression reads the stored array (its type as the snapshot holds it)
as the type the View's schema wants, by the schema evolution rules
(format/schema.py ``conform_array``): a struct field the snapshot lacks is
None, a field it has that the wanted type lacks is left out, a null-typed
array is None wherever it is read. Names come from a counter and field names
only appear as ``repr()`` literals, so no name can inject code.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from combe.format.errors import FormatError
from combe.format.types import NESTED, kind, list_item, map_types, struct_fields

from .buffers import byte_slicer, typed_view

# Lists of scalars up to this many items are read item by item, without a comprehension.
UNROLL = 4


def is_nested(type_: str) -> bool:
    return kind(type_) in NESTED


class _Emitter:
    """Builds the expression of one column, adding the buffers it reads to ``env`` under fresh names."""

    def __init__(self, env: dict[str, Any], prefix: str) -> None:
        self.env, self.prefix, self.count = env, prefix, 0
        self.names: dict[tuple[Any, ...], str] = {}  # a buffer read again (unrolled items) keeps its name

    def local(self, what: str) -> str:
        """A fresh name for a value the expression assigns itself (``:=``)."""
        name = f"{what}{self.prefix}{self.count}"
        self.count += 1
        return name

    def name(self, value: Any, same: tuple[Any, ...] | None = None) -> str:
        """A fresh global name for ``value``; values given the same ``same`` share one name."""
        if same is not None and same in self.names:
            return self.names[same]
        name = f"{self.prefix}{self.count}"
        self.count += 1
        self.env[name] = value
        if same is not None:
            self.names[same] = name
        return name

    def value(self, array: pa.Array | None, stored: str, wanted: str, at: str, depth: int = 0) -> str:
        """The expression of the value of ``array`` (combe type ``stored``) at index ``at``, as ``wanted``."""
        if array is None or stored == "null" or wanted == "null":
            return "None"
        head = kind(wanted)
        if kind(stored) != head:
            raise FormatError(f"a value stored as {stored} cannot be read as {wanted}")
        if head == "list":
            expr = self._list(array, stored, wanted, at, depth)
        elif head == "struct":
            expr = self._struct(array, stored, wanted, at, depth)
        elif head == "map":
            expr = self._map(array, stored, wanted, at, depth)
        else:
            expr = self._scalar(array, head, at)
        if not array.null_count:
            return expr
        bits, position = self._view(array.buffers()[0], "B"), self._position(array, at)
        return f"({expr} if {bits}[{position} >> 3] >> ({position} & 7) & 1 else None)"

    def _view(self, buffer: pa.Buffer | None, fmt: str, start: int = 0, stop: int | None = None) -> str:
        """The name of a typed memoryview of ``buffer[start:stop]`` (in items of ``fmt``)."""
        return self.name(typed_view(buffer, fmt)[start:stop], ("view", _address(buffer), fmt, start, stop))

    @staticmethod
    def _position(array: pa.Array, at: str) -> str:
        """Where logical index ``at`` of ``array`` is in its buffers."""
        return f"({at} + {array.offset})" if array.offset else at

    def _offsets(self, array: pa.Array) -> str:
        return self._view(array.buffers()[1], "i", array.offset, array.offset + len(array) + 1)

    def _scalar(self, array: pa.Array, head: str, at: str) -> str:
        buffers, offset, length = array.buffers(), array.offset, len(array)
        if head in ("int64", "float64"):
            values = self._view(buffers[1], "q" if head == "int64" else "d", offset, offset + length)
            return f"{values}[{at}]"
        if head == "bool":
            bits, position = self._view(buffers[1], "B"), self._position(array, at)
            return f"({bits}[{position} >> 3] >> ({position} & 7) & 1 == 1)"
        if head in ("string", "binary"):
            offsets = self._offsets(array)
            self.name(buffers[2], ("keep", _address(buffers[2])))  # keeps the buffer alive: the slicer does not
            data = self.name(byte_slicer(buffers[2]), ("bytes", _address(buffers[2])))
            text = f"{data}[{offsets}[{at}]:{offsets}[{_next(at)}]]"
            return text if head == "binary" else f"{text}.decode()"
        raise FormatError(f"no nested reader for type {head}")

    def _list(self, array: pa.Array, stored: str, wanted: str, at: str, depth: int) -> str:
        offsets = self._offsets(array)
        items, item_stored, item_wanted = array.values, list_item(stored), list_item(wanted)
        start, end = f"{offsets}[{at}]", f"{offsets}[{at} + 1]"
        if item_stored == "null" or item_wanted == "null":
            return f"[None] * ({end} - {start})"
        if item_stored == item_wanted in ("int64", "float64") and not items.null_count:
            # A slice of a typed memoryview turns into Python numbers in C.
            values = self._view(items.buffers()[1], "q" if item_stored == "int64" else "d", items.offset,
                                items.offset + len(items))
            return f"{values}[{start}:{end}].tolist()"
        index = f"j{depth}"

        def item(at: str) -> str:
            return self.value(items, item_stored, item_wanted, at, depth + 1)

        if is_nested(item_stored) or items.null_count:
            return f"[{item(index)} for {index} in range({start}, {end})]"
        # Short lists of scalars (tags, ids: the common case) are spelt out item by item up to UNROLL
        # items: no comprehension to set up, about 15% less per lookup. ``s`` and ``n`` are this list's
        # start and length, assigned once (fresh names, so lists inside lists cannot clash).
        s, n = self.local("s"), self.local("n")
        shapes = " else ".join(f"[{', '.join(item(f'{s} + {k}' if k else s) for k in range(m))}] if {n} == {m}"
                               for m in range(1, UNROLL + 1))
        longer = f"[{item(index)} for {index} in range({s}, {s} + {n})]"
        return f"([] if ({n} := {end} - ({s} := {start})) == 0 else {shapes} else {longer})"

    def _map(self, array: pa.Array, stored: str, wanted: str, at: str, depth: int) -> str:
        offsets = self._offsets(array)
        (key_type, value_stored), value_wanted = map_types(stored), map_types(wanted)[1]
        index = f"j{depth}"
        key = self.value(array.keys, key_type, map_types(wanted)[0], index, depth + 1)
        value = self.value(array.items, value_stored, value_wanted, index, depth + 1)
        return f"{{{key}: {value} for {index} in range({offsets}[{at}], {offsets}[{at} + 1])}}"

    def _struct(self, array: pa.Array, stored: str, wanted: str, at: str, depth: int) -> str:
        # A struct's children are indexed like the struct itself (pyarrow's field() applies its offset).
        children = {name: (array.field(i), field_type) for i, (name, field_type) in enumerate(struct_fields(stored))}
        items = []
        for name, field_type in struct_fields(wanted):
            child, child_stored = children.get(name, (None, "null"))
            items.append(f"{name!r}: {self.value(child, child_stored, field_type, at, depth)}")
        return "{" + ", ".join(items) + "}"


def _next(at: str) -> str:
    """The index after ``at``, folded when ``at`` is ``name + k`` (as unrolled items are written)."""
    name, plus, step = at.rpartition(" + ")
    return f"{name} + {int(step) + 1}" if plus and step.isdigit() else f"{at} + 1"


def _address(buffer: pa.Buffer | None) -> int | None:
    return None if buffer is None else buffer.address


def nested_source(array: pa.Array | None, stored: str, wanted: str, at: str, env: dict[str, Any],
                  prefix: str) -> str:
    """The expression of one column's value at row ``at`` (see the module docstring); names start with ``prefix``."""
    return _Emitter(env, prefix).value(array, stored, wanted, at)
