"""Declared schemas and compound keys (issue 13): what they cost a first publish, against the same publish with
the schema inferred and string keys, in the same run.

Every side is a whole ``combe publish --once`` process into an empty store, on the producer scenario's 8-field
changelog (bench/data.py ``write_products``). Each run, in a directory of its own:

1. the changelog, schema inferred, string keys: the baseline;
2. the same changelog with ``--schema FILE``, the file being the ``schema`` of step 1's manifest (the
   ``--schema`` form is a manifest's): every record checked against it instead of inferred;
3. the changelog with every key made compound, ``{"tenant": n % 97, "id": key}``, with ``--key-type
   struct<tenant:int64,id:string>``: every key checked and stored as its canonical JSON array text.

Every publish's counts are checked; ratios are taken run by run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .. import data
from ..publish_runs import DATASET, expect, publish
from ..stats import Figure, ratio
from ..workspace import Workspace

COMPOUND = "struct<tenant:int64,id:string>"


def compound_changelog(source: Path, target: Path) -> None:
    """``source`` with each line's key made a compound key object."""
    with open(source, "rb") as lines, open(target, "wb") as out:
        for number, line in enumerate(lines):
            record = json.loads(line)
            record["key"] = {"tenant": number % 97, "id": record["key"]}
            out.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")


def run(ws: Workspace) -> list[Figure]:
    records = ws.mode.records
    root = ws.root / "keys"
    root.mkdir(exist_ok=True)
    plain, compound = root / "products.jsonl", root / "compound.jsonl"
    data.write_products(plain, records)
    compound_changelog(plain, compound)
    scale = f"{records:,} records, whole process"
    inferred = Figure("publish_inferred_s", "s", [], f"combe publish --once, schema inferred, string keys, {scale}")
    declared = Figure("publish_declared_s", "s", [], f"the same with --schema (the schema inferred), {scale}")
    compound_keys = Figure("publish_compound_key_s", "s", [], f"the same records with compound keys "
                           f"--key-type '{COMPOUND}', {scale}")
    for number in range(ws.mode.runs):
        directory = root / f"run-{number}"
        directory.mkdir()
        step, summary = publish(plain, directory / "inferred", directory / "cache-inferred")
        step.check()
        expect(summary, version=1, added=records)
        inferred.values.append(step.seconds)
        manifest = directory / "inferred" / DATASET / "versions" / f"{1:012d}.json"
        schema = directory / "schema.json"
        schema.write_text(json.dumps(json.loads(manifest.read_bytes())["schema"]))
        step, summary = publish(plain, directory / "declared", directory / "cache-declared",
                                options=["--schema", str(schema)])
        step.check()
        expect(summary, version=1, added=records, bad_records=0)
        declared.values.append(step.seconds)
        step, summary = publish(compound, directory / "compound", directory / "cache-compound",
                                options=["--key-type", COMPOUND])
        step.check()
        expect(summary, version=1, added=records, bad_records=0)
        compound_keys.values.append(step.seconds)
        shutil.rmtree(directory)
    return [
        inferred, declared, compound_keys,
        ratio("declared_schema_publish_multiple_of_inferred", declared, inferred,
              note="first publish with --schema / with the schema inferred, same records, whole processes"),
        ratio("compound_key_publish_multiple_of_string_key", compound_keys, inferred,
              note="first publish with compound keys / with string keys, same values, whole processes"),
    ]
