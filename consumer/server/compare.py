"""Diffs between two versions and one key's history, paged (consumer/timeline.py computes them).

A diff is paged in key order with a cursor tied to the version it compares
to (``to``, by default the version served), so a client paging while the
server moves to a newer version is told to start again. A key's history is
listed newest first, like ``/versions``; its cursor is the last version listed.
"""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, Response, jsonify, request

from combe.format.errors import RequestError
from combe.format.keys import lookup_key, parse_int64

from .params import next_cursor, parse_cursor, parse_limit
from .routes import _announced, _dataset, _one_chain, _server

compare = Blueprint("combe_compare", __name__)


def _version_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    version = parse_int64(raw)
    if version is None or version < 1:
        raise RequestError(f"{name}={raw!r}: give a version number (1 or more)")
    return version


@compare.get("/v1/datasets/<name>/diff")
def diff(name: str) -> Response:
    settings = _server().settings
    served, found_view = _dataset(name)
    view = _one_chain(name, found_view, "a diff")
    start = _version_arg("from")
    if start is None:
        raise RequestError("give the version to compare from: ?from=A (and to=B; by default the version served)")
    end = _version_arg("to") or view.version
    limit = parse_limit(request.args.get("limit"), settings.page_size, settings.page_limit)
    offset = parse_cursor(request.args.get("cursor"), end)
    found = served.comparisons.diff(start, end, view)
    page = found.page(offset, limit)
    return jsonify({"dataset": name, "version": view.version, "from": start, "to": end, "method": found.method,
                    "bytes_read": found.bytes_read, "counts": found.counts,
                    "changes": [asdict(change) for change in page],
                    "next_cursor": next_cursor(offset, len(page), len(found), end)})


@compare.get("/v1/datasets/<name>/history/<path:key>")
def key_history(name: str, key: str) -> Response:
    settings = _server().settings
    served, view = _dataset(name)
    _one_chain(name, view, "the history of a key")
    parsed = lookup_key(key, view.schema.key_type)
    limit = parse_limit(request.args.get("limit"), settings.page_size, settings.page_limit)
    below = parse_cursor(request.args.get("cursor"))
    found = served.comparisons.history(parsed, _announced(served, view))
    newest_first = [change for change in reversed(found.changes) if not below or change.version < below]
    page = newest_first[:limit]
    return jsonify({"dataset": name, "version": view.version, "key": parsed, "to": found.to_version,
                    "removed_by_gc": [{"first": first, "last": last} for first, last in found.removed_by_gc],
                    "changes": [asdict(change) for change in page],
                    "next_cursor": str(page[-1].version) if len(newest_first) > limit else None})
