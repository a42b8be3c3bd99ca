"""The flask app factory, and what every response gets: X-Combe-Version, an ETag, 304s, metrics."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask.json.provider import DefaultJSONProvider

from combe.format.errors import ConfigError

from ..consumer import Consumer
from .auth import Tokens
from .catalog import Catalog
from .checks import check_index
from .compare import compare
from .errors import render_error
from .metrics import Metrics
from .routes import api
from .settings import Settings
from .state import Server


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")  # binary columns: base64, documented in openapi.json
    return DefaultJSONProvider.default(value)


class _JSON(DefaultJSONProvider):
    """Records keep their schema's column order; binary values become base64 text."""

    sort_keys = False
    compact = True
    default = staticmethod(_json_default)


def create_app(store: str | None = None, datasets: Iterable[str] = (), *, consumers: Iterable[Consumer] = (),
               settings: Settings | None = None, cache_dir: str | Path | None = None,
               storage_options: dict[str, Any] | None = None, tokens: Tokens | None = None,
               shards: Collection[int] | None = None, trusted_keys: Iterable[str | Path] = ()) -> Flask:
    """A flask app answering for ``datasets`` in ``store`` (loaded in the background) and for ``consumers``.

    It returns once every dataset has loaded, or after ``settings.ready_wait``
    seconds (datasets still loading then answer 503 until they load), so a
    gunicorn worker accepts requests only when it can answer them. With
    ``tokens`` every route but /healthz, the explorer page and the spec needs
    a bearer token (auth.py). ``shards`` holds only those shards of the
    datasets (sharded, all of them) it loads: a key of another shard is
    answered 421, for a router to send it to the server holding it.
    ``app.extensions["combe"].close()`` stops the background work.
    """
    settings = settings or Settings()
    catalog = Catalog(store, datasets, refresh_interval=settings.refresh_interval, cache_dir=cache_dir,
                      storage_options=storage_options, consumers=consumers, shards=shards,
                      trusted_keys=trusted_keys)
    if tokens is not None:
        tokens.check_names(catalog.names)
    server = Server(catalog, Metrics(catalog), settings, tokens)
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1  # see routes._body
    app.json = _JSON(app)
    app.extensions["combe"] = server
    app.register_blueprint(api)
    app.register_blueprint(compare)
    app.register_error_handler(Exception, render_error)
    app.before_request(_started)
    app.before_request(_authorize)
    app.after_request(_finish)
    catalog.start(on_tick=server.metrics.update)
    catalog.wait_ready(settings.ready_wait)
    try:
        check_index(settings.index, {name: served.consumer.view().schema for name, served in catalog.loaded().items()},
                    every_schema=catalog.ready)
    except ConfigError:
        server.close()
        raise
    return app


def _started() -> None:
    g.combe_started = time.perf_counter()


# Routes anyone may ask without a token: liveness, and pages that hold no data (the explorer asks for a token).
OPEN_ENDPOINTS = frozenset({"combe_api.healthz", "combe_api.explorer", "combe_api.openapi", "static"})


def _authorize() -> None:
    server: Server = current_app.extensions["combe"]
    if server.tokens is not None and request.endpoint not in OPEN_ENDPOINTS:
        g.combe_grant = server.tokens.check(request.headers.get("Authorization"))


def _version_header(server: Server) -> str | None:
    """The version that answered; for routes about no one dataset, every loaded dataset's the client may read."""
    version = g.get("combe_version")
    if version is not None:
        return str(version)
    grant = g.get("combe_grant")
    if server.tokens is not None and grant is None:
        return None  # not to a client without a valid token: the names and versions are the server's to tell
    loaded = server.catalog.loaded()
    return ",".join(f"{name}={entry.consumer.version}" for name, entry in loaded.items()
                    if grant is None or grant.may_read(name))


def _finish(response: Response) -> Response:
    server: Server = current_app.extensions["combe"]
    headers = response.headers
    version = _version_header(server)
    if version is not None:
        headers["X-Combe-Version"] = version
    if "ETag" not in headers and not response.direct_passthrough:
        # A hash of the body, so it changes exactly when the answer does. Checked here rather than with
        # werkzeug's make_conditional, which parses ranges and dates no route here needs, on every request.
        etag = '"' + hashlib.blake2b(response.get_data(), digest_size=16).hexdigest() + '"'
        headers["ETag"] = etag
        if (response.status_code == 200 and request.method in ("GET", "HEAD")
                and "HTTP_IF_NONE_MATCH" in request.environ and request.if_none_match.contains_weak(etag[1:-1])):
            response.status_code = 304  # werkzeug sends no body and no entity headers with a 304
    started = g.get("combe_started")
    if started is not None:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        server.metrics.observe(request.method, rule, response.status_code, time.perf_counter() - started)
    return response
