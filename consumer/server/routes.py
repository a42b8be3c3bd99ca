"""The JSON API: datasets, records by key and in batch, queries, versions and their changes, health.

Each dataset route takes the consumer's current View once and answers from
it alone, so the body and the X-Combe-Version header describe one version
even if a refresh swaps in the next one mid-request.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from combe.format.errors import DatasetNotFound, RecordNotFound, RequestError, RequestTooLarge
from combe.format.keys import key_fields, lookup_key
from combe.format.manifest import parse_time

from ..sharded import AnyView, ShardedView
from ..view import View
from .auth import require
from .catalog import Served
from .freshness import HEADER as MIN_VERSION
from .freshness import at_least, parse_min_version
from .params import next_cursor, parse_batch, parse_cursor, parse_limit
from .query import parse_query, query_fields
from .state import Server

api = Blueprint("combe_api", __name__)


def _server() -> Server:
    server: Server = current_app.extensions["combe"]
    return server


def _dataset(name: str) -> tuple[Served, AnyView]:
    """The dataset and the View that answers, at least as new as the client's X-Combe-Min-Version."""
    server = _server()
    require(g.get("combe_grant"), name)
    served = server.catalog.get(name)
    wanted = parse_min_version(request.headers.get(MIN_VERSION))
    if wanted is None:
        view = served.consumer.view()
    else:
        view = at_least(served.consumer, served.refreshing, wanted, server.settings.min_version_wait)
    g.combe_version = view.version
    return served, view


def _one_chain(name: str, view: AnyView, what: str) -> View:
    """The View of an unsharded dataset; a sharded one's versions are not one chain the history routes can read."""
    if isinstance(view, ShardedView):
        raise RequestError(f"{what} of {name} is not available: {name} is sharded, and this server reads the "
                           "changes of unsharded datasets only; records, batches and queries work")
    return view


def _age(created_at: str, now: float) -> float:
    return round(max(0.0, now - parse_time(created_at).timestamp()), 3)


# -- datasets -----------------------------------------------------------------------


@api.get("/v1/datasets")
def list_datasets() -> Response:
    catalog = _server().catalog
    loaded = catalog.loaded()
    grant = g.get("combe_grant")
    datasets = []
    for name in catalog.names:
        if grant is not None and not grant.may_read(name):
            continue
        entry = loaded.get(name)
        view = entry.consumer.view() if entry else None  # once: version and count from the same View
        datasets.append({"name": name, "ready": view is not None,
                         "version": view.version if view else None, "records": len(view) if view else None})
    return jsonify({"datasets": datasets})


@api.get("/v1/datasets/<name>")
def describe_dataset(name: str) -> Response:
    served, view = _dataset(name)
    status = served.consumer.status()
    now = time.time()
    manifest = view.manifest
    announced = status["announced"] or view.version
    return jsonify({
        "name": name,
        "version": view.version,
        "records": len(view),
        "key": {"field": view.schema.key_field, "type": view.schema.key_type},
        "schema": view.schema.to_json(),
        "created_at": manifest.created_at,
        "tags": manifest.tags,
        "announced": announced,
        "pin": status["pin"] if status["pin"] is not None else status["store_pin"],
        "queryable": sorted(query_fields(view, _server().settings.index)),
        "shards": {"count": view.shard_count, "held": list(view.shards)} if isinstance(view, ShardedView) else None,
        "staleness": {
            "seconds_since_check": round(now - status["last_refresh"], 3) if status["last_refresh"] else None,
            "versions_behind": max(0, announced - view.version),
            "version_age_seconds": _age(manifest.created_at, now),
            "last_error": status["last_error"],
            "last_error_at": status["last_error_at"],
        },
    })


# -- records --------------------------------------------------------------------------


@api.get("/v1/datasets/<name>/records/<path:key>")
def get_record(name: str, key: str) -> Response:
    _, view = _dataset(name)
    key_type = view.schema.key_type
    if key_fields(key_type):
        raise RequestError(f"{name} has a compound key ({key_type}): give its fields as query parameters, "
                           f"/v1/datasets/{name}/records?{'&'.join(f'{n}=...' for n, _ in key_fields(key_type))}")
    return _record(name, view, lookup_key(key, key_type), repr(key))


@api.get("/v1/datasets/<name>/records")
def get_record_by_fields(name: str) -> Response:
    """A record of a compound key, its fields as query parameters (``?tenant=7&id=x``): unlike path segments,
    a parameter's text may hold any character, '/' included."""
    _, view = _dataset(name)
    key_type = view.schema.key_type
    if not key_fields(key_type):
        raise RequestError(f"{name}'s key is a single {key_type}: ask /v1/datasets/{name}/records/<key>")
    fields = {}
    for field, values in request.args.lists():
        if len(values) != 1:
            raise RequestError(f"query parameter {field!r} is given {len(values)} times; give each key field once")
        fields[field] = values[0]
    return _record(name, view, lookup_key(fields, key_type, "the query's key"), repr(fields))


def _record(name: str, view: AnyView, key: str | int, shown: str) -> Response:
    record = view.get(key)
    if record is None:
        raise RecordNotFound(f"no record with key {shown} in {name} version {view.version}",
                             dataset=name, version=view.version)
    return jsonify({"dataset": name, "version": view.version, "key": key, "record": record})


def _body(limit: int) -> bytes:
    """The request body, refused past ``limit`` bytes whether or not it declares its length.

    The app's MAX_CONTENT_LENGTH is ``limit + 1``: werkzeug stops a chunked
    body there without an error, so one byte over the limit is what tells a
    body that was cut short from one that fits.
    """
    size = request.content_length
    try:
        data = request.get_data(cache=False) if size is None or size <= limit else b""
    except HTTPException:
        raise  # werkzeug's own answer (a client that disconnected mid-body): a 400 already
    except Exception as exc:  # noqa: BLE001 - each WSGI server raises its own classes for a body it cannot decode
        raise RequestError(f"the request body could not be read ({type(exc).__name__}): send it whole, with a "
                           "valid Content-Length or chunked encoding") from None
    if (size or len(data)) > limit:
        raise RequestTooLarge(f"the request body is over {limit} bytes, the most this server accepts "
                              "(max_body_bytes)")
    return data


@api.post("/v1/datasets/<name>/records:batchGet")
def batch_get(name: str) -> Response:
    settings = _server().settings
    _, view = _dataset(name)
    keys = parse_batch(_body(settings.max_body_bytes), view.schema.key_type, settings.batch_limit)
    return jsonify({"dataset": name, "version": view.version, "records": view.get_many(keys)})


@api.get("/v1/datasets/<name>/query")
def query(name: str) -> Response:
    settings = _server().settings
    _, view = _dataset(name)
    limit = parse_limit(request.args.get("limit"), settings.page_size, settings.page_limit)
    offset = parse_cursor(request.args.get("cursor"), view.version)
    args = {k: request.args.getlist(k) for k in request.args if k not in ("limit", "cursor")}
    found, kind = parse_query(args, view, settings.index)
    records = found.run(view, kind, offset, limit + 1)  # one more than the page: is there a next page?
    page = records[:limit]
    return jsonify({"dataset": name, "version": view.version, "field": found.field, "match": found.match,
                    "records": page, "next_cursor": next_cursor(offset, len(page), offset + len(records),
                                                                view.version)})


# -- versions -------------------------------------------------------------------------


def _announced(served: Served, view: AnyView) -> int:
    """The newest version readers may see: manifests past it are not announced (yet, or ever)."""
    announced = served.consumer.status()["announced"]
    return max(announced or 0, view.version)


@api.get("/v1/datasets/<name>/versions")
def list_versions(name: str) -> Response:
    settings = _server().settings
    served, view = _dataset(name)
    _one_chain(name, view, "the version list")
    limit = parse_limit(request.args.get("limit"), settings.page_size, settings.page_limit)
    below = parse_cursor(request.args.get("cursor"))
    newest = _announced(served, view)
    candidates = [v for v in reversed(served.history.versions()) if v <= newest and (not below or v < below)]
    entries = []
    for version in candidates[:limit]:
        try:
            manifest = served.history.manifest(version)
        except DatasetNotFound:
            continue  # removed by gc since the listing
        entries.append({"version": version, "parent": manifest.parent, "created_at": manifest.created_at,
                        "producer": manifest.producer, "records": manifest.record_count,
                        "changes": manifest.changes, "snapshot": manifest.snapshot is not None,
                        "schema_change": manifest.schema_change, "tags": manifest.tags})
    more = len(candidates) > limit
    return jsonify({"dataset": name, "version": view.version, "announced": newest, "versions": entries,
                    "next_cursor": str(candidates[limit - 1]) if more else None})


@api.get("/v1/datasets/<name>/versions/<int:version>/changes")
def version_changes(name: str, version: int) -> Response:
    settings = _server().settings
    served, view = _dataset(name)
    _one_chain(name, view, f"the changes of version {version}")
    limit = parse_limit(request.args.get("limit"), settings.page_size, settings.page_limit)
    offset = parse_cursor(request.args.get("cursor"))
    if not 1 <= version <= _announced(served, view):
        raise DatasetNotFound(f"{name} has no announced version {version}", dataset=name)
    changes = served.history.changes(version)
    page = changes.page(offset, limit)
    manifest = changes.manifest
    return jsonify({"dataset": name, "version": version, "parent": manifest.parent,
                    "created_at": manifest.created_at, "counts": changes.counts, "changes": page,
                    "next_cursor": next_cursor(offset, len(page), changes.rows.num_rows)})


# -- health ---------------------------------------------------------------------------


@api.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@api.get("/readyz")
def readyz() -> Response:
    require(g.get("combe_grant"), None)
    catalog = _server().catalog
    waiting = {name: catalog.last_load_error.get(name, "loading")
               for name in catalog.names if name not in catalog.loaded()}
    response = jsonify({"ready": not waiting, "waiting": waiting})
    response.status_code = 200 if not waiting else 503
    return response


@api.get("/metrics")
def metrics() -> Response:
    require(g.get("combe_grant"), None)
    server = _server()
    return Response(server.metrics.render(), content_type=server.metrics.content_type)


@functools.cache
def _packaged(name: str) -> bytes:
    """A file shipped in this package; read once, then answered from memory with the usual ETag."""
    return (Path(__file__).parent / name).read_bytes()


@api.get("/openapi.json")
def openapi() -> Response:
    return Response(_packaged("openapi.json"), mimetype="application/json")


@api.get("/")
def explorer() -> Response:
    return Response(_packaged("static/index.html"), mimetype="text/html")
