"""Options every subcommand shares, declared once."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from combe.format.dataset import Dataset
from combe.format.errors import ConfigError
from combe.format.settings import settings_of


def key_values(pairs: list[str] | None, flag: str, *, unique: bool = False) -> dict[str, str]:
    """``key=value`` arguments as a dict, with an error naming the flag (and a repeated key, if ``unique``)."""
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, found, value = pair.partition("=")
        if not found or not key:
            raise ConfigError(f"{flag} {pair!r}: expected key=value")
        if unique and key in result:
            raise ConfigError(f"{flag} {key}=...: given twice; give each key once")
        result[key] = value
    return result


def storage_options(args: argparse.Namespace) -> dict[str, Any]:
    """--storage-option values, JSON where they parse as JSON so that ``anon=false`` is False, not the
    (true) string "false", and ``client_kwargs={"region_name": "eu-west-1"}`` is a dict; else the text."""
    return {key: _option_value(value) for key, value in key_values(args.storage_option, "--storage-option").items()}


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def add_dataset_options(parser: argparse.ArgumentParser, *, many: bool = False, signing: bool = False) -> None:
    """--store, --dataset (repeatable when ``many``), --storage-option, --trusted-key; --signing-key for
    the subcommands that write (``signing``)."""
    group = parser.add_argument_group("dataset")
    group.add_argument("--store", default=os.environ.get("COMBE_STORE"),
                       help="where datasets live: a path, file://, memory://, s3://bucket/prefix "
                            "(default: $COMBE_STORE)")
    if many:
        group.add_argument("--dataset", action="append", metavar="NAME",
                           help="a dataset's name; repeat for more (default: $COMBE_DATASET, comma-separated)")
    else:
        group.add_argument("--dataset", default=os.environ.get("COMBE_DATASET"),
                           help="the dataset's name (default: $COMBE_DATASET)")
    group.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                       help="passed to the fsspec filesystem, e.g. endpoint_url=...; a value that parses "
                            "as JSON is passed as such: anon=true, max_attempts=3 (repeatable)")
    group.add_argument("--trusted-key", action="append", metavar="PATH",
                       help="accept only versions signed by this Ed25519 public key file (PEM or ssh-ed25519); "
                            "repeat to trust several, as during a key rotation (default: $COMBE_TRUSTED_KEYS, "
                            f"paths separated by '{os.pathsep}')")
    if signing:
        group.add_argument("--signing-key", metavar="PATH", default=os.environ.get("COMBE_SIGNING_KEY"),
                           help="sign every manifest and announcement written with this Ed25519 private key file "
                                "(default: $COMBE_SIGNING_KEY; an encrypted key's passphrase is read from "
                                "$COMBE_SIGNING_KEY_PASSPHRASE, never from the command line)")


def trusted_keys(args: argparse.Namespace) -> list[str]:
    """The public key files to verify with: --trusted-key, else $COMBE_TRUSTED_KEYS."""
    return args.trusted_key or [p for p in os.environ.get("COMBE_TRUSTED_KEYS", "").split(os.pathsep) if p]


def open_dataset(args: argparse.Namespace, store: str, name: str) -> Dataset:
    """The dataset with the store options and keys the command line gives."""
    return Dataset.open(store, name, storage_options(args), signing_key=getattr(args, "signing_key", None),
                        trusted_keys=trusted_keys(args))


def require_dataset(args: argparse.Namespace) -> tuple[str, str]:
    if not args.store:
        raise ConfigError("no store given: pass --store URL or set COMBE_STORE")
    if not args.dataset:
        raise ConfigError("no dataset given: pass --dataset NAME or set COMBE_DATASET")
    return args.store, args.dataset


def require_datasets(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The store and the datasets of a subcommand that takes several (``many=True``)."""
    if not args.store:
        raise ConfigError("no store given: pass --store URL or set COMBE_STORE")
    names = args.dataset or [n for n in os.environ.get("COMBE_DATASET", "").split(",") if n]
    if not names:
        raise ConfigError("no dataset given: pass --dataset NAME (repeatable) or set COMBE_DATASET")
    return args.store, list(dict.fromkeys(names))


def shard_list(text: str | None, flag: str = "--shards") -> tuple[int, ...] | None:
    """``--shards`` text (``0-3``, ``1,5``, ``0-1,4``) as ascending shard numbers; None when not given."""
    if text is None:
        return None
    shards: set[int] = set()
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise ConfigError(f"{flag} {text!r}: give shard numbers and ranges, e.g. 0-3 or 1,5") from None
        if not 0 <= first <= last:
            raise ConfigError(f"{flag} {text!r}: {part.strip()!r} is not a range of shards from 0 up")
        shards.update(range(first, last + 1))
    return tuple(sorted(shards))


def flag(name: str) -> str:
    """The flag of a library parameter: ``snapshot_every`` -> ``--snapshot-every``."""
    return "--" + name.replace("_", "-")


def add_settings(group: argparse._ArgumentGroup, cls: type, names: tuple[str, ...] | None = None) -> None:
    """A flag for each setting of ``cls`` (format/settings.py), or of those ``names``: default, help and
    choices come from the library's declaration."""
    for item in settings_of(cls):
        if names is None or item.name in names:
            group.add_argument(flag(item.name), type=item.kind, default=item.default, choices=item.choices or None,
                               help=f"{item.help} (default: {item.default})".replace("%", "%%"))


def settings_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The values the flags of ``add_settings(..., cls)`` were given, by parameter name."""
    return {item.name: getattr(args, item.name) for item in settings_of(cls) if hasattr(args, item.name)}


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for machines instead of text")


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, default=str, ensure_ascii=False) + "\n")
