"""The ``combe publish`` options that keep a bad version from reaching consumers.

Defaults come from ``Limits`` (declared once, in producer/validators.py), so
the library and the command refuse the same things.
"""

from __future__ import annotations

import argparse
from typing import Any

from combe.producer.validators import Limits, load_validator, percent


def share(text: str) -> float:
    """``0.5`` or ``50%``; Limits says which shares it takes."""
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share: use 0.5 or 50%") from None


def _help_percent(share: float | None) -> str:
    """A percentage inside argparse help, where a bare % starts a format."""
    return "off" if share is None else percent(share).replace("%", "%%")


def add_validation_options(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    group = parser.add_argument_group(
        "checks before announcing",
        "A version that fails a check is not announced; a --once run exits with code 3 (a daemon tries again "
        "next interval) and says what was measured against which limit. Shares are of the previous version's "
        "record count.")
    for change, verb, noun, when in (("removed", "removes", "removals", ""),
                                     ("added", "adds", "additions",
                                      f", once the dataset has {defaults.added_floor} or more")):
        limit = group.add_mutually_exclusive_group()
        default = getattr(defaults, f"max_{change}")
        limit.add_argument(f"--max-{change}", type=share, default=default, metavar="SHARE",
                           help=f"refuse a cycle that {verb} more than this share of the records{when} "
                                f"(default: {_help_percent(default)})")
        limit.add_argument(f"--no-max-{change}", dest=f"max_{change}", action="store_const", const=None,
                           help=f"do not limit {noun}")
    group.add_argument("--min-records", type=int, default=defaults.min_records, metavar="N",
                       help="refuse a version with fewer than N records (default: 0, off)")
    group.add_argument("--allow-empty-keys", action="store_true",
                       help="accept records whose key is empty (refused by default)")
    group.add_argument("--validator", action="append", metavar="MODULE:FUNCTION",
                       help="a custom check called with a ValidationContext; anything it raises refuses the "
                            "version with its message (repeatable; the module must be importable: PYTHONPATH)")
    group.add_argument("--no-integrity-check", dest="integrity_check", action="store_false",
                       help="skip decoding the new blobs to check prev + delta == new and new + reverse == prev "
                            "(on by default)")
    group.add_argument("--allow-schema-change", action="store_true",
                       help="let a value change its column's type (a bad record otherwise): the version is "
                            "published as a snapshot only, and consumers reload it whole")


def validation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The PublishOptions fields these flags set."""
    return {
        "limits": Limits(max_removed=args.max_removed, max_added=args.max_added, min_records=args.min_records,
                         allow_empty_keys=args.allow_empty_keys),
        "validators": [load_validator(spec) for spec in args.validator or []],
        "integrity_check": args.integrity_check,
        "allow_schema_change": args.allow_schema_change,
    }
