"""``combe get``: look records up by key, as a consumer would."""

from __future__ import annotations

import argparse
import json
import sys

from combe.consumer import Consumer

from .options import add_dataset_options, require_dataset, storage_options, trusted_keys


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "get", help="print the records for KEY... as JSON lines",
        description="Load the announced (or --at) version and print one JSON line per key: the record, "
                    "or null when the key is absent (also said on stderr).")
    add_dataset_options(parser)
    parser.add_argument("keys", nargs="+", metavar="KEY", help="keys to look up")
    parser.add_argument("--at", type=int, metavar="VERSION", help="read this version instead of the announced one")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    store, name = require_dataset(args)
    consumer = Consumer(store, name, pin=args.at, storage_options=storage_options(args),
                        trusted_keys=trusted_keys(args))
    for key, record in zip(args.keys, consumer.get_many(args.keys)):
        if record is None:
            print(f"combe get: {key!r} is not in {name} version {consumer.version}", file=sys.stderr)
        sys.stdout.write(json.dumps(record, ensure_ascii=False, default=_bytes) + "\n")
    return 0


def _bytes(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
