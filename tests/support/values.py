"""Hypothesis strategies for Python values of a combe type, nulls allowed at every level.

The values are in the form readers return: lists, dicts for structs (every
field present) and for maps (distinct keys), bytes for binary.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from combe.format.types import kind, list_item, map_types, struct_fields

_SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "int64": st.integers(-2**63, 2**63 - 1),
    "float64": st.floats(allow_nan=False),
    "bool": st.booleans(),
    "string": st.text(max_size=12),
    "binary": st.binary(max_size=12),
}


def values(type_: str, *, size: int = 3) -> st.SearchStrategy[Any]:
    """A value of ``type_`` or None."""
    head = kind(type_)
    if head == "null":
        return st.none()
    if head == "list":
        inner: st.SearchStrategy[Any] = st.lists(values(list_item(type_), size=size), max_size=size)
    elif head == "struct":
        inner = st.fixed_dictionaries({name: values(t, size=size) for name, t in struct_fields(type_)})
    elif head == "map":
        key_type, value_type = map_types(type_)
        inner = st.dictionaries(_SCALARS[key_type], values(value_type, size=size), max_size=size)
    else:
        inner = _SCALARS[head]
    return st.none() | inner


# Column types covering the shapes readers special-case and the generic nesting.
NESTED_TYPES = [
    "list<string>", "list<int64>", "list<float64>", "list<bool>", "list<binary>", "list<null>",
    "struct<id:int64,name:string,score:float64,ok:bool,raw:binary,nothing:null>",
    'struct<"first name":string,"x:y":int64>', "struct<>",
    "map<string,int64>", "map<int64,string>", "map<string,list<string>>",
    "list<list<int64>>", "list<struct<a:int64,b:list<string>>>", "struct<inner:struct<m:map<int64,bool>>>",
    "map<string,struct<x:float64,tags:list<string>>>",
]
