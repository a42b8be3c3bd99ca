"""``combe inspect``: what a dataset holds, version by version."""

from __future__ import annotations

import argparse
from typing import Any

from combe.format.dataset import Dataset
from combe.format.errors import DatasetNotFound
from combe.format.manifest import Pointer

from .options import add_dataset_options, add_json_option, emit_json, open_dataset, require_dataset


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "inspect", help="show the announced version, the pin, the lease, the columns, and every version's counts, "
                        "blobs, positions and tags",
        description="Show a dataset's announced version and pin, the lease's holder and epoch (producers run "
                    "with --lease), the columns and their types (nested types "
                    "spelled as in manifests: list<string>, struct<id:int64,...>, map<string,int64>), and for "
                    "each version: records, changes, blob sizes, the source positions it folded through and "
                    "its tags.")
    add_dataset_options(parser)
    parser.add_argument("--last", type=int, metavar="N", help="only the newest N versions")
    add_json_option(parser)
    parser.set_defaults(run=run)


def describe(dataset: Dataset, last: int | None = None) -> dict[str, Any]:
    """The dataset as one JSON-able document."""
    announced = dataset.announced().pointer
    if announced is None:
        raise DatasetNotFound(f"dataset {dataset.name!r} has no announced version at {dataset.url}",
                              dataset=dataset.name)
    versions = dataset.versions()
    if last:
        versions = versions[-last:]
    if announced.shard_count is not None:
        return _describe_sharded(dataset, announced, versions)
    schema = dataset.manifest(announced.serving).schema.to_json()
    rows = []
    for version in versions:
        manifest = dataset.manifest(version)
        rows.append({
            "version": version,
            "parent": manifest.parent,
            "created_at": manifest.created_at,
            "records": manifest.record_count,
            "changes": manifest.changes,
            "snapshot_version": manifest.snapshot_version,
            "blobs": {name: ({"path": ref.path, "bytes": ref.bytes, "rows": ref.rows} if ref else None)
                      for name, ref in (("snapshot", manifest.snapshot), ("delta", manifest.delta),
                                        ("reverse", manifest.reverse))},
            "source": {"uri": manifest.source_uri, "positions": manifest.positions},
            "tags": manifest.tags,
            "announced": version <= announced.version,
        })
    lease, _ = dataset.lease()
    return {"dataset": dataset.name, "store": dataset.url, "announced": announced.version,
            "pin": announced.pin, "announced_at": announced.at, "lease_epoch": announced.lease_epoch,
            "lease": None if lease is None else {"holder": lease.holder, "epoch": lease.epoch,
                                                 "renewed_at": lease.renewed_at, "expires_at": lease.expires_at,
                                                 "duration_ms": lease.duration_ms},
            "schema": schema, "versions": rows}


def _describe_sharded(dataset: Dataset, announced: Pointer, versions: list[int]) -> dict[str, Any]:
    """A sharded dataset: its versions (the shard versions each names) and each shard's head and positions."""
    count = announced.shard_count
    assert count is not None
    serving = dataset.sharded_manifest(announced.serving)
    rows = []
    for version in versions:
        manifest = dataset.sharded_manifest(version)
        rows.append({"version": version, "parent": manifest.parent, "created_at": manifest.created_at,
                     "records": manifest.record_count, "shard_versions": manifest.shard_versions,
                     "tags": manifest.tags, "announced": version <= announced.version})
    shards = []
    for index in range(count):
        shard = dataset.shard(index, count)
        head = shard.announced().pointer
        newest = shard.manifest(head.version) if head is not None else None
        shards.append({"shard": index, "head": head.version if head else None,
                       "served": serving.shards[index].version,
                       "records": newest.record_count if newest else None,
                       "source": {"uri": newest.source_uri, "positions": newest.positions} if newest else None})
    return {"dataset": dataset.name, "store": dataset.url, "announced": announced.version, "pin": announced.pin,
            "announced_at": announced.at, "shard_count": count, "schema": serving.schema.to_json(),
            "versions": rows, "shards": shards}


def _positions(source: dict[str, Any] | None) -> str:
    if not source:
        return ""
    return "; ".join(f"{stream} " + ",".join(f"{p}:{o}" for p, o in parts.items())
                     for stream, parts in source["positions"].items())


def _size(ref: dict[str, Any] | None) -> str:
    return f"{ref['bytes'] / 1024:.1f}K" if ref else "-"


def run(args: argparse.Namespace) -> int:
    store, name = require_dataset(args)
    document = describe(open_dataset(args, store, name), args.last)
    if args.json:
        emit_json(document)
        return 0
    pin = f", pinned to {document['pin']}" if document["pin"] is not None else ""
    sharded = f" ({document['shard_count']} shards)" if "shards" in document else ""
    print(f"{document['dataset']} at {document['store']}{sharded}: announced version {document['announced']}{pin}")
    lease = document.get("lease")
    if lease is not None:
        print(f"lease: held by {lease['holder']} (epoch {lease['epoch']}) until {lease['expires_at']}; the "
              f"announcement carries epoch {document['lease_epoch']}")
    width = max(len(column["name"]) for column in document["schema"])
    print("columns (of the version served):")
    for column in document["schema"]:
        print(f"  {column['name']:<{width}}  {column['type']}")
    if "shards" in document:
        _print_sharded(document)
        return 0
    print(f"{'version':>8} {'records':>10} {'added':>8} {'updated':>8} {'removed':>8} "
          f"{'snapshot':>9} {'delta':>8} {'reverse':>8}  source positions")
    for row in document["versions"]:
        changes, blobs = row["changes"], row["blobs"]
        positions = _positions(row["source"])
        mark = "" if row["announced"] else " (not announced)"
        print(f"{row['version']:>8} {row['records']:>10} {changes.get('added', 0):>8} {changes.get('updated', 0):>8} "
              f"{changes.get('removed', 0):>8} {_size(blobs['snapshot']):>9} {_size(blobs['delta']):>8} "
              f"{_size(blobs['reverse']):>8}  {positions}{mark}")
        if row["tags"]:
            print(f"{'':>8} tags: " + " ".join(f"{key}={value}" for key, value in row["tags"].items()))
    return 0


def _print_sharded(document: dict[str, Any]) -> None:
    print(f"{'version':>8} {'records':>10}  shard versions (shard 0, 1, ...)")
    for row in document["versions"]:
        mark = "" if row["announced"] else " (not announced)"
        print(f"{row['version']:>8} {row['records']:>10}  {' '.join(map(str, row['shard_versions']))}{mark}")
        if row["tags"]:
            print(f"{'':>8} tags: " + " ".join(f"{key}={value}" for key, value in row["tags"].items()))
    print(f"{'shard':>8} {'head':>6} {'served':>6} {'records':>10}  source positions of the head")
    for shard in document["shards"]:
        head = "-" if shard["head"] is None else shard["head"]
        records = "-" if shard["records"] is None else shard["records"]
        print(f"{shard['shard']:>8} {head:>6} {shard['served']:>6} {records:>10}  {_positions(shard['source'])}")
