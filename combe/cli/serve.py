"""``combe serve``: the lookup HTTP endpoint, under gunicorn (or flask's server with --dev)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from combe.format.errors import ConfigError
from combe.format.signing import TrustedKeys

from .options import add_dataset_options, require_datasets, shard_list, storage_options, trusted_keys

TOKENS_VARIABLE = "COMBE_SERVE_TOKENS"  # bearer tokens, as the lines of a --token-file

if TYPE_CHECKING:
    from combe.consumer.server.settings import Settings

DESCRIPTION = """\
Serve datasets over HTTP as JSON: records by key and in batch, queries on
indexed fields, versions and what each changed, /healthz, /readyz,
Prometheus /metrics, an OpenAPI spec at /openapi.json and an explorer page
at /. Each dataset is loaded in the background and refreshed every
--refresh-interval seconds; /readyz answers 200 once all are loaded.

gunicorn runs --workers processes that share one blob cache directory
(--cache-dir, else a temporary one): blobs are downloaded once and their
Arrow files memory-mapped by every worker. SIGTERM stops it gracefully.
"""

def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from combe.consumer.server.runner import Listen
    from combe.consumer.server.settings import setting_help

    parser = subparsers.add_parser("serve", help="serve datasets over HTTP (JSON API, metrics, explorer)",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_options(parser, many=True)
    http = parser.add_argument_group("server")
    http.add_argument("--host", default=Listen.host, help=f"address to listen on (default: {Listen.host})")
    http.add_argument("--port", type=int, default=Listen.port, help=f"port to listen on (default: {Listen.port})")
    http.add_argument("--workers", type=int, default=Listen.workers,
                      help=f"gunicorn worker processes (default: {Listen.workers})")
    http.add_argument("--threads", type=int, default=Listen.threads,
                      help="threads per worker answering requests; a request reaches one only once it has "
                           f"arrived whole (default: {Listen.threads})")
    http.add_argument("--request-timeout", type=float, default=Listen.request_timeout, metavar="SECONDS",
                      help="seconds a client has to send a whole request (head and body), and to read the "
                           f"answer; later is answered 408 and closed (default: {Listen.request_timeout:g})")
    http.add_argument("--dev", action="store_true", help="run flask's development server instead of gunicorn")
    http.add_argument("--cache-dir", type=Path,
                      help="blob cache shared by the workers; kept across restarts (default: a temporary directory)")
    http.add_argument("--access-log", action="store_true", help="log every request to stdout")
    http.add_argument("--shards", metavar="LIST",
                      help="of sharded datasets, hold and answer only these shards (0-3, 1,5): a key of another "
                           "shard answers 421, for a router to send it to the server holding it (default: all)")
    access = parser.add_argument_group("access control and TLS")
    access.add_argument("--token-file", type=Path, action="append", default=[], metavar="PATH",
                        help="bearer tokens, one a line: TOKEN [DATASET ...] (no dataset: every one); then every "
                             f"route but /healthz needs one (repeatable; also ${TOKENS_VARIABLE}, same lines)")
    access.add_argument("--certfile", type=Path, help="serve HTTPS with this certificate chain (PEM)")
    access.add_argument("--keyfile", type=Path, help="the private key of --certfile (PEM)")
    for name, kind, default, text in setting_help():
        flag = f"--{name.replace('_', '-')}"
        if kind is tuple:
            http.add_argument(flag, dest=f"setting_{name}", action="append", default=[], metavar="FIELD", help=text)
        else:
            http.add_argument(flag, dest=f"setting_{name}", type=kind, default=default,
                              metavar="SECONDS" if kind is float else "N", help=f"{text} (default: {default})")
    parser.set_defaults(run=run)


def _settings(args: argparse.Namespace) -> Settings:
    from combe.consumer.server.settings import Settings, setting_help

    # Each flag's value has the type its setting declares (argparse converted it); Settings checks the ranges.
    values: dict[str, Any] = {name: tuple(value) if kind is tuple else value for name, kind, *_ in setting_help()
                              if (value := getattr(args, f"setting_{name}")) is not None}
    return Settings(**values)


def run(args: argparse.Namespace) -> int:
    store, names = require_datasets(args)
    if args.workers < 1 or args.threads < 1:
        raise ConfigError("--workers and --threads must be 1 or more")
    if args.request_timeout <= 0:
        raise ConfigError("--request-timeout must be above 0 seconds")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: use 0 to 65535")
    settings = _settings(args)
    options = storage_options(args)
    keys = trusted_keys(args)
    if keys:
        TrustedKeys.from_files(keys)  # a missing or unreadable key file fails now, not in every worker
    from combe.consumer.server.auth import Tokens
    from combe.consumer.server.runner import Listen, scratch_directory, serve_dev, serve_gunicorn

    tokens = Tokens.read(args.token_file, {TOKENS_VARIABLE: os.environ[TOKENS_VARIABLE]}
                         if TOKENS_VARIABLE in os.environ else {})
    if tokens is not None:
        tokens.check_names(names)
    from combe.consumer.server.checks import check_datasets

    shards = shard_list(args.shards)
    check_datasets(store, names, settings.index, options, shards)
    listen = Listen(args.host, args.port, args.workers, args.threads, args.access_log,
                    request_timeout=args.request_timeout, max_body_bytes=settings.max_body_bytes,
                    certfile=args.certfile, keyfile=args.keyfile)
    with scratch_directory("combe-serve-") as scratch:
        cache_dir = args.cache_dir or scratch / "blobs"

        def factory() -> Any:
            try:
                from combe.consumer.server import create_app
            except ImportError as exc:
                raise ConfigError(f"combe serve needs flask and prometheus_client ({exc.name} is missing); "
                                  "install them with: pip install 'combe[server]'") from exc
            return create_app(store, names, settings=settings, cache_dir=cache_dir, storage_options=options,
                              tokens=tokens, shards=shards, trusted_keys=keys)

        if args.dev:
            serve_dev(factory, listen)
        else:
            serve_gunicorn(factory, listen, scratch / "metrics", settings.ready_wait)
    return 0
