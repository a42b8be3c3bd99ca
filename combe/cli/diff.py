"""``combe diff`` and ``combe history``: what changed between two versions, and when one key changed."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from combe.consumer.diff import Diff
from combe.consumer.timeline import METHODS, KeyHistory, Timeline

from .options import add_dataset_options, add_json_option, emit_json, open_dataset, require_dataset


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers both subcommands: they read a dataset's past the same way (consumer/timeline.py)."""
    diff = subparsers.add_parser(
        "diff", help="keys added, updated and removed between versions A and B, with before and after",
        description="Compare two versions still in the store (either may be the older): every key added, "
                    "updated or removed, in key order, with its record at A and at B. Computed from the deltas "
                    "between them or from both versions whole, whichever reads fewer bytes; the summary says "
                    "which.")
    add_dataset_options(diff)
    diff.add_argument("from_version", type=int, metavar="A", help="the version to compare from")
    diff.add_argument("to_version", type=int, metavar="B", help="the version to compare to")
    diff.add_argument("--method", choices=METHODS, help="compute it this way (default: the one that reads less)")
    diff.add_argument("--limit", type=int, metavar="N", help="print only the first N changes (the counts are "
                                                            "of all of them)")
    add_json_option(diff)
    diff.set_defaults(run=run_diff)
    history = subparsers.add_parser(
        "history", help="every version still in the store at which KEY changed, with its record",
        description="Walk the versions still in the store, oldest first, and print each one at which KEY was "
                    "added, updated or removed, with its record then. Versions removed by gc are skipped and "
                    "said to be: a change made in them shows at the next version kept.")
    add_dataset_options(history)
    history.add_argument("key", metavar="KEY", help="the key (int64 datasets: its decimal text)")
    history.add_argument("--to", type=int, metavar="VERSION", dest="to_version",
                         help="stop at this version (default: the announced one)")
    add_json_option(history)
    history.set_defaults(run=run_history)


def _timeline(args: argparse.Namespace) -> Timeline:
    store, name = require_dataset(args)
    return Timeline(open_dataset(args, store, name))


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _text(record: dict[str, Any] | None) -> str:
    """A record for people: its fields that are not null (--json has them all)."""
    return "-" if record is None else _value({k: v for k, v in record.items() if v is not None})


def _fields_changed(before: dict[str, Any], after: dict[str, Any]) -> str:
    names = [name for name in dict.fromkeys([*before, *after]) if before.get(name) != after.get(name)]
    return "; ".join(f"{name}: {_value(before.get(name))} -> {_value(after.get(name))}" for name in names)


def how(diff: Diff) -> str:
    """How a diff was computed, in words."""
    low, high = sorted((diff.from_version, diff.to_version))
    if low == high:
        return "the same version: nothing to read"
    steps = f"the deltas of version {high}" if high == low + 1 else f"the deltas of versions {low + 1} to {high}"
    way = steps if diff.method == "deltas" else "both versions' states"
    return f"from {way}: {diff.bytes_read:,} bytes of blobs read"


def run_diff(args: argparse.Namespace) -> int:
    diff = _timeline(args).diff(args.from_version, args.to_version, method=args.method)
    changes = diff.page(0, len(diff) if args.limit is None else max(0, args.limit))
    if args.json:
        emit_json({"dataset": diff.dataset, "from": diff.from_version, "to": diff.to_version,
                   "method": diff.method, "bytes_read": diff.bytes_read, "counts": diff.counts,
                   "changes": [asdict(change) for change in changes]})
        return 0
    counts = diff.counts
    print(f"{diff.dataset}: version {diff.from_version} -> {diff.to_version}: +{counts['added']} added, "
          f"~{counts['updated']} updated, -{counts['removed']} removed ({how(diff)})")
    for change in changes:
        if change.before is None or change.after is None:
            shown = _text(change.after if change.before is None else change.before)
        else:
            shown = _fields_changed(change.before, change.after)
        print(f"{change.op:<8} {change.key}  {shown}")
    if len(changes) < len(diff):
        print(f"... {len(diff) - len(changes)} more")
    return 0


def gaps_text(history: KeyHistory) -> str:
    return ", ".join(f"{first}" if first == last else f"{first}-{last}" for first, last in history.removed_by_gc)


def run_history(args: argparse.Namespace) -> int:
    history = _timeline(args).history(args.key, to_version=args.to_version)
    if args.json:
        emit_json({"dataset": history.dataset, "key": history.key, "to": history.to_version,
                   "removed_by_gc": [list(gap) for gap in history.removed_by_gc],
                   "changes": [asdict(change) for change in history.changes]})
        return 0
    print(f"{history.dataset} key {history.key!r}: {len(history.changes)} changes up to version {history.to_version}")
    if history.removed_by_gc:
        print(f"versions {gaps_text(history)} were removed by gc and are skipped: a change made in them shows at the "
              "next version kept, compared with the last version before them")
    for change in history.changes:
        since = "" if change.since is None or change.since == change.version - 1 else f" (since {change.since})"
        print(f"{change.version:>8}  {change.op:<8} {change.created_at}  {_text(change.record)}{since}")
    return 0
