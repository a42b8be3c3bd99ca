"""Queries by field value: which fields can be matched, and the records that match.

Only the key field and the fields the server was started with ``--index``
answer queries, so a query costs an index lookup, never a scan, and clients
cannot make the server build an index on every column. The consumer builds
each index on first use and keeps it current across refreshes.

``field=value`` matches equal values; ``field.gte=lo`` and/or ``field.lt=hi``
match a range (in field order). A json or nested column matches by equality
only, with the value written as JSON (``tags=["a","b"]``), as the JSON API
answers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from combe.format.errors import RequestError

from ..sharded import AnyView
from .checks import equality_only, queryable
from .params import parse_value

RANGE_OPS = ("gte", "lt")


def query_fields(view: AnyView, indexes: Sequence[str]) -> dict[str, str]:
    """Queryable field -> its column type."""
    fields = {view.schema.key_field: view.schema.key_stored}
    for name in indexes:
        kind = view.schema.columns.get(name)
        if kind is not None and queryable(kind):
            fields[name] = kind
    return fields


@dataclass(frozen=True)
class Query:
    field: str
    match: dict[str, str]  # {"eq": text} or {"gte": text, "lt": text} (either bound optional), as given

    def run(self, view: AnyView, kind: str, offset: int, limit: int) -> list[dict[str, Any]]:
        """Matches ``offset`` to ``offset + limit``: only those records are built, however many match."""
        values = {op: parse_value(text, kind, self.field) for op, text in self.match.items()}
        if "eq" in values:
            if self.field == view.schema.key_field:  # the primary index answers without building another
                record = view.get(values["eq"])
                return [record][offset:offset + limit] if record is not None else []
            return view.index(self.field).get(values["eq"], offset=offset, limit=limit)
        return view.index(self.field).range(values.get("gte"), values.get("lt"), offset=offset, limit=limit)


def parse_query(args: dict[str, list[str]], view: AnyView, indexes: Sequence[str]) -> tuple[Query, str]:
    """The query in the URL's parameters (limit and cursor left out), and the field's type."""
    fields = query_fields(view, indexes)
    usage = (f"match one field: ?field=value, or ?field.gte=low&field.lt=high; queryable in "
             f"{view.manifest.dataset}: {', '.join(sorted(fields))}")
    match: dict[str, str] = {}
    field = None
    for name, texts in args.items():
        head, dot, tail = name.rpartition(".")
        base, op = (head, tail) if dot and tail in RANGE_OPS else (name, "eq")
        if field is not None and base != field or len(texts) != 1:
            raise RequestError(f"{name}: {usage}")
        field = base
        match[op] = texts[0]
    if field is None or ("eq" in match and len(match) > 1):
        raise RequestError(usage)
    if field not in fields:
        raise RequestError(f"{field!r} is not an indexed field of {view.manifest.dataset}; {usage}")
    if equality_only(fields[field]) and "eq" not in match:
        raise RequestError(f"{field} holds {fields[field]} values, which match by equality only: "
                           f"?{field}=<JSON value>")
    return Query(field, match), fields[field]
