"""``combe gc``: delete the versions and blobs retention no longer keeps."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from combe.producer.retention import Deletion, GcPlan, Retention, collect_garbage

from .options import add_dataset_options, add_json_option, emit_json, open_dataset, require_dataset

DESCRIPTION = """\
Delete the manifests and blobs that no kept version needs. Kept versions:
the newest --keep-versions announced versions, those younger than
--keep-days, the announced version, the store-wide pin, and any version
written but not yet announced. For each, gc keeps the manifests of every
version from its nearest snapshot up to it and the blobs they name
(snapshot, deltas, reverse deltas); nothing else, not even the versions
between two kept ones that no such chain passes through. Blobs that no
manifest references (left by failed or refused cycles) are deleted once
older than --grace-hours, and so are the temporary files of writes a killed
producer never finished.
announced.json is never touched. Use --dry-run to see what would go.

Of a sharded dataset, the versions above are dataset versions: gc keeps
their sharded manifests and, in each shard, the shard versions they name
(with their chains) and any shard version no dataset version names yet.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("gc", help="delete old versions and the blobs of failed cycles",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_options(parser)
    parser.add_argument("--keep-versions", type=int, required=True, metavar="N",
                        help="keep the newest N announced versions (at least 1)")
    parser.add_argument("--keep-days", type=float, metavar="D",
                        help="also keep every version published in the last D days")
    parser.add_argument("--grace-hours", type=float, default=24.0, metavar="H",
                        help="delete blobs no manifest references only once older than this (default: 24); "
                             "a running producer writes blobs before its manifest")
    parser.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")
    add_json_option(parser)
    parser.set_defaults(run=run)


def ranges(versions: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    spans: list[list[int]] = []
    for version in versions:
        if spans and version == spans[-1][1] + 1:
            spans[-1][1] = version
        else:
            spans.append([version, version])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) or "none"


def _summary(plan: GcPlan, dry_run: bool) -> str:
    pin = f", pin {plan.pin}" if plan.pin is not None else ""
    manifests = sum(1 for d in plan.deletions if "/blobs/" not in f"/{d.path}")
    verb = "would delete" if dry_run else "deleted"
    shards = "" if plan.shards is None else " and shard manifests " + "; ".join(
        f"{shard}: {ranges(versions)}" for shard, versions in plan.shards.items())
    return (f"{plan.dataset}: announced {plan.announced}{pin}; keeps versions {ranges(plan.kept)} "
            f"(manifests {ranges(plan.manifests)}{shards} stay); {verb} {manifests} manifests and "
            f"{len(plan.deletions) - manifests} blobs, {plan.bytes / 1e6:.2f} MB")


def run(args: argparse.Namespace) -> int:
    store, name = require_dataset(args)
    retention = Retention(args.keep_versions, args.keep_days, args.grace_hours)
    dataset = open_dataset(args, store, name)

    def show(deletion: Deletion) -> None:
        if not args.json:
            print(f"{'would delete' if args.dry_run else 'deleted'} {deletion.path} ({deletion.bytes:,} bytes): "
                  f"{deletion.reason}", flush=True)

    plan = collect_garbage(dataset, retention, dry_run=args.dry_run, on_delete=show)
    if args.json:
        emit_json({"dataset": plan.dataset, "announced": plan.announced, "pin": plan.pin, "kept": plan.kept,
                   "manifests": plan.manifests, "deleted": [asdict(d) for d in plan.deletions],
                   "bytes": plan.bytes, "dry_run": args.dry_run,
                   **({"shards": plan.shards} if plan.shards is not None else {})})
    else:
        print(_summary(plan, args.dry_run))
    return 0
