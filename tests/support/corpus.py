"""The conformance corpus (docs/conformance/): small stores written by combe, and what every version holds.

``python -m tests.support.corpus [DIR]`` (``make corpus``) writes it into DIR
(default docs/conformance), replacing what the last run wrote there;
tests/test_conformance.py writes it again into a temporary directory and
compares. Everything is deterministic: blob uids, document times and the
producer id come from ``Stamps`` through PublishOptions, and the changelogs
are files read by combe's own file source under a fixed stream name.

Most datasets are published by the producer from a changelog (``Logged``);
what it cannot write (nested columns, a frame size below the default, format
version 1 manifests) is written with the format layer (``Layered``), as a
producer of that kind would write it. The expected state of every version is
read back with combe and checked against the cases' own model before it is
written, so the corpus never records something combe reads differently.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from combe.format.checksum import (TAGS, bytes_hash, digest_sum, legacy_state_checksum, name_seed, row_digests,
                                   state_checksum, value_hashes)
from combe.format.codec import FRAME_BYTES, compress, ipc_file_bytes, read_ipc, sha256_hex
from combe.format.commit import commit
from combe.format.dataset import Dataset
from combe.format.delta import ADDED, REMOVED, UPDATED, make_delta
from combe.format.index import INDEX_ENDS, INDEX_ROWS, key_bytes, key_hash, with_index
from combe.format.jsontext import json_text
from combe.format.keys import lookup_key
from combe.format.layout import (MANIFEST_FORMAT, POINTER_FORMAT, SHARDED_MANIFEST_FORMAT, SHARDED_POINTER_FORMAT,
                                 delta_blob, reverse_blob, snapshot_blob)
from combe.format.manifest import TIME_FORMAT, BlobRef, Manifest, Pointer
from combe.format.partition import key_text, murmur2, partition_of
from combe.format.schema import Schema, conform
from combe.format.sharded import ShardedManifest, Sharding
from combe.format.types import arrow_type, kind, list_item, map_types, struct_fields
from combe.producer import PublishOptions, Publisher, RecordFormat
from combe.producer.sources.file import FileSource
from combe.producer.state import load_state
from combe.producer.validators import Limits
from tests.support.changelog import canon

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "docs" / "conformance"
# What a run writes, and so removes first; README.md and reader.py are written by hand.
GENERATED = ("corpus.json", "vectors.json", "changelogs", "store", "expected")
PRODUCER = "combe-conformance"
# The multi-frame dataset's frame size: small enough that a hundred short rows take several frames.
SMALL_FRAMES = 1024
# Keys looked up in every snapshot besides those it holds.
ABSENT_KEYS: dict[str, list[Any]] = {"string": ["absent", "\U0001F601", ""], "int64": [2, -(2**62), 10**18]}


class Stamps:
    """Blob uids and document times that are the same each run: a counter, and a clock one second a tick."""

    def __init__(self) -> None:
        self.uids = 0
        self.ticks = 0

    def uid(self) -> str:
        self.uids += 1
        return f"{self.uids:032x}"

    def now(self) -> str:
        self.ticks += 1
        return (datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=self.ticks)).strftime(TIME_FORMAT)


class Changelog(FileSource):
    """A changelog file recorded under a fixed stream name, so manifests do not hold a temporary path."""

    def __init__(self, path: Path, name: str, delimiter: str | None = None) -> None:
        super().__init__(str(path), key_delimiter=delimiter)
        self.uri = self.stream = name


# -- the cases ------------------------------------------------------------------------------------------------

Change = tuple[Any, Any]  # (key, value): a JSON value for json datasets, text or bytes otherwise; None deletes


@dataclass
class Logged:
    """A dataset the producer publishes from a changelog, one cycle per entry of ``cycles``."""

    name: str
    about: str
    cycles: list[list[Change]]
    fmt: RecordFormat = field(default_factory=RecordFormat)
    snapshot_every: int = 20
    schema_change_at: int | None = None  # the cycle published with allow_schema_change
    pin: int | None = None
    # Records the model cannot derive, by version: a type change converts values.
    converted: dict[int, dict[Any, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Sharded:
    """A sharded dataset: each cycle's changes go to the changelogs of their shards (by the partitioner), those
    shards publish a version each, and one commit names every shard's head as the next dataset version."""

    name: str
    about: str
    shard_count: int
    cycles: list[list[Change]]
    fmt: RecordFormat = field(default_factory=RecordFormat)


Row = dict[str, Any]


@dataclass
class Version:
    """One version a Layered dataset writes: the whole state (key -> record) and its schema."""

    state: dict[Any, Row]
    schema: Schema
    snapshot: bool = False
    format_version: int = MANIFEST_FORMAT
    # How json values become text: combe's canonical form, or another writer's (older combe's).
    json_writer: Callable[[Any], str] = json_text


@dataclass
class Layered:
    """A dataset written with the format layer, version by version; ``then`` continues it with the producer."""

    name: str
    about: str
    versions: list[Version]
    frame_bytes: int = FRAME_BYTES
    then: Logged | None = None


def _older_json_text(value: Any) -> str:
    """How combe wrote json columns before the canonical form (Python's float repr, names by code point)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


ODD_FLOATS = [1e16, 1e-7, 0.000001, 1e21, 2.5, -0.0, 100.0, 0.1, 5e-324]
CANONICAL_SHOWCASE = {"b": 1.0, "a": ODD_FLOATS, "\uffff": 1, "\U0001F600": 2, "\ue000": 3,
                      "big": [2**53 + 1, 2**64 - 1, -(2**63)], "text": "\u0000\u001f\"\\/\u007f\u2028\u00e9"}

SCALARS = Logged(
    "scalars",
    "string keys whose UTF-8 and UTF-16 orders differ (and the empty key); every scalar column type but json: "
    "string, int64 (its extremes), float64 (-0.0, subnormal, max), bool, null; lists of strings (list<string>); "
    "nulls; a column typed null that gets a type by an ordinary delta; columns appended; tombstones; re-added "
    "keys; a record sent again unchanged; a snapshot at version 4",
    [
        [("", {"title": "the empty key", "year": 2000, "rating": 0.1, "seen": False, "tags": ["x"], "note": None,
               "big": 0}),
         ("a", {"title": "Alpha", "year": 1999, "rating": 100, "seen": True, "tags": ["drama", "comedy"],
                "note": None, "big": 2**63 - 1}),
         ("b", {"title": "Beta \u00e9\u65e5\u672c", "year": -1, "rating": -0.0, "seen": None, "tags": None,
                "big": -(2**63)}),
         ("\u00e9", {"title": "", "year": None, "rating": 5e-324, "tags": []}),
         ("\ue000", {"title": "private use", "rating": 1.7976931348623157e308, "tags": ["\U0001F600", ""]}),
         ("\uffff", {"title": "last of the BMP", "year": 1, "rating": 1e16}),
         ("\U0001F600", {"title": "emoji", "year": 2, "rating": 1e-7}),
         ("z", {"title": "Zed", "year": 3, "rating": -2.5, "seen": False})],
        [("a", {"title": "Alpha 2", "year": 1999, "rating": 99.5, "seen": True, "tags": ["drama"]}),
         ("b", None),
         ("c", {"title": "Gamma", "note": "the note column gets its type", "added": "an appended column"}),
         ("z", {"title": "Zed", "year": 3, "rating": -2.5, "seen": False})],
        [("b", {"title": "Beta again", "year": 2}),
         ("\uffff", None),
         ("\u00e9", {"title": "", "year": None, "rating": 5e-324, "tags": ["new"]})],
        [("d", {"title": "Delta", "more": 3.5}),
         ("a", None)],
        [("a", {"title": "Alpha 3"}),
         ("c", {"title": "Gamma", "note": "the note column gets its type"})],
    ],
    snapshot_every=3,
)

TYPED = Logged(
    "typed",
    "typed nested columns as the producer infers them from JSON values: arrays as lists (of int64, of float64 "
    "when integers and floats mix, of structs), objects as structs (nested three deep); then grown by ordinary "
    "deltas: a struct field appended (in a column and in a list's structs), a list of nulls typed by its first "
    "value; nulls at every level",
    [
        [("t1", {"ints": [1, 2, 3], "mixed": [1, 2.5], "point": {"x": 1, "y": -0.0},
                 "people": [{"name": "Ann", "age": 41, "address": {"city": "Oslo", "lines": ["a", "b"]}}],
                 "later": [None]}),
         ("t2", {"ints": [], "mixed": [], "point": {"x": None, "y": 2.5}, "people": [None, {"name": None}],
                 "later": []}),
         ("t3", {"ints": None, "point": None, "people": []})],
        [("t1", {"ints": [1, 2, 3], "mixed": [1, 2.5], "point": {"x": 1, "y": -0.0, "label": "appended"},
                 "people": [{"name": "Ann", "age": 41, "address": {"city": "Oslo", "lines": ["a", "b"]},
                             "tags": ["new field"]}],
                 "later": [7, None]}),
         ("t4", {"ints": [-(2**63), 2**63 - 1], "point": {"x": 0}})],
        [("t2", None), ("t3", {"ints": [0], "people": [{"address": {"city": None, "lines": []}}]})],
    ],
)

INT_KEYS = Logged(
    "int-keys",
    "int64 keys at both extremes, sorted numerically; value_format string; a key sent as the text 007; "
    "snapshots every second version",
    [
        [(-(2**63), "min"), (-1, "minus one"), (0, "zero"), (1, "one"), (7, "seven"), (2**63 - 1, "max"),
         (1234567, "\u65e5\u672c")],
        [("007", "seven, sent as 007"), (0, None), (42, "forty-two")],
        [(2**62, "2^62"), (-1, "minus one, updated")],
        [(2**63 - 1, None), (0, "zero again")],
    ],
    fmt=RecordFormat(key_type="int64", value_format="string"),
    snapshot_every=2,
)

BYTES_VALUES = Logged(
    "bytes-values",
    "value_format bytes from key|value lines: values that are not UTF-8, a tombstone (an empty value), "
    "a re-added key",
    [
        [("k1", b"\xff\xfe\x00\x01"), ("k2", b"plain text"), ("k3", b"\x80")],
        [("k1", b"\x00"), ("k3", None), ("k4", b"\xc3\xa9t\xc3\xa9")],
        [("k3", b"back")],
    ],
    fmt=RecordFormat(value_format="bytes"),
)

TYPE_CHANGE = Logged(
    "type-change",
    "a column's type changed by a version published with allow_schema_change (a snapshot, no deltas; "
    "values converted), then an ordinary delta",
    [
        [("m1", {"title": "One", "year": 1991}), ("m2", {"title": "Two", "year": 1992})],
        [("m3", {"title": "Three", "year": 2003})],
        [("m1", {"title": "One", "year": "MCMXCI"}), ("m4", {"title": "Four", "year": 2004.0})],
        [("m5", {"title": "Five", "year": "1995"}), ("m2", None)],
    ],
    schema_change_at=3,
    converted={3: {"m2": {"title": "Two", "year": "1992"}, "m3": {"title": "Three", "year": "2003"},
                   "m4": {"title": "Four", "year": "2004"}}},
)

PINNED = Logged(
    "pinned",
    "three versions and a store-wide pin: readers serve version 2",
    [
        [("x", {"n": 1}), ("y", {"n": 2})],
        [("x", {"n": 10})],
        [("y", None), ("z", {"n": 3})],
    ],
    pin=2,
)

EMPTIED = Logged(
    "emptied",
    "every key removed: an empty state with a snapshot (no rows, empty index columns), then a key re-added",
    [
        [("p", {"n": 1}), ("q", {"n": 2})],
        [("p", None), ("q", None)],
        [("p", {"n": 3})],
    ],
    snapshot_every=1,
)

NESTED_SCHEMA = Schema("key", "string", {
    "ints": "list<int64>",
    "names": "list<string>",
    "point": "struct<x:float64,y:float64>",
    "person": 'struct<name:string,"first name":string,age:int64,tags:list<string>>',
    "scores": "map<string,float64>",
    "by_id": "map<int64,list<bool>>",
    "deep": "list<struct<a:list<int64>,m:map<string,string>>>",
    "raw": "binary",
})
_NESTED_1: dict[Any, Row] = {
    "r1": {"ints": [1, 2, 3], "names": ["a", "\u00e9", ""], "point": {"x": 1.5, "y": -0.0},
           "person": {"name": "Ann", "first name": "Ann", "age": 41, "tags": ["x", "y"]},
           "scores": [("b", 2.0), ("a", 1.0)], "by_id": [(5, [True]), (-(2**63), [])],
           "deep": [{"a": [1], "m": [("k", "v")]}], "raw": b"\x00\xff"},
    "r2": {"ints": [None, -(2**63), 2**63 - 1], "names": [], "point": None,
           "person": {"name": None, "first name": "Bo", "age": None, "tags": None},
           "scores": [], "by_id": [(1, None), (-1, [True, None, False])],
           "deep": [None, {"a": None, "m": [("k", None)]}, {"a": [], "m": []}], "raw": b""},
    "r3": {},
}
NESTED = Layered(
    "nested",
    "nested column types: lists, structs (a field name that needs quoting), maps with string and int64 keys "
    "(entries in the order written), nested three deep; nulls at every level, empty lists and maps",
    [
        Version(_NESTED_1, NESTED_SCHEMA, snapshot=True),
        Version({"r1": {**_NESTED_1["r1"], "scores": [("a", 1.0), ("b", 2.0)], "ints": [3, 2, 1]},
                 "r2": _NESTED_1["r2"],
                 "r4": {"person": {"name": "Cy", "first name": None, "age": 7, "tags": []}}}, NESTED_SCHEMA),
        Version({"r1": {**_NESTED_1["r1"], "scores": [("a", 1.0), ("b", 2.0)], "ints": [3, 2, 1]},
                 "r2": _NESTED_1["r2"], "r3": {"point": {"x": None, "y": 2.0}},
                 "r4": {"person": {"name": "Cy", "first name": None, "age": 7, "tags": []}}}, NESTED_SCHEMA,
                snapshot=True),
    ],
)

# Types that grow by ordinary deltas, at every depth (FORMAT.md "Schema evolution"): struct fields appended,
# null types taking a type as a column, a list item, a map value and a struct field.
_GROWN = [
    {"s": "struct<a:int64>", "l": "list<null>", "m": "map<string,null>", "deep": "list<struct<x:string>>"},
    {"s": "struct<a:int64,b:string>", "l": "list<int64>", "m": "map<string,float64>",
     "deep": "list<struct<x:string,y:list<null>>>"},
    {"s": "struct<a:int64,b:string>", "l": "list<int64>", "m": "map<string,float64>",
     "deep": "list<struct<x:string,y:list<bool>,z:struct<q:null>>>", "added": "string"},
]
_GROWTH_1: dict[Any, Row] = {
    "g1": {"s": {"a": 1}, "l": [None, None], "m": [("k", None)], "deep": [{"x": "one"}, None]},
    "g2": {"s": None, "l": [], "m": [], "deep": []},
    "g3": {"s": {"a": None}},
}
_GROWTH_2: dict[Any, Row] = {
    **_GROWTH_1,
    "g2": {"s": {"a": 2, "b": "grown"}, "l": [2, None], "m": [("k", 2.5), ("j", None)],
           "deep": [{"x": "two", "y": [None]}]},
    "g4": {"s": {"a": None, "b": None}, "l": [None], "deep": [{"x": None, "y": []}]},
}
GROWTH = Layered(
    "growth",
    "types that grow by ordinary deltas at every depth: struct fields appended (in a column and inside a list's "
    "items), null types that take one (a list's items, a map's values, a struct field), a column appended; "
    "walks back drop what the older schema lacks",
    [
        Version(_GROWTH_1, Schema("key", "string", _GROWN[0]), snapshot=True),
        Version(_GROWTH_2, Schema("key", "string", _GROWN[1])),
        Version({**_GROWTH_2,
                 "g1": {**_GROWTH_1["g1"], "deep": [{"x": "one", "y": [True, None], "z": {"q": None}}, None]},
                 "g3": {"s": {"a": 3, "b": "b"}, "added": "appended"}},
                Schema("key", "string", _GROWN[2])),
        Version({**_GROWTH_2, "g3": {"s": {"a": 3, "b": "b"}, "added": "appended"}},
                Schema("key", "string", _GROWN[2]), snapshot=True),
    ],
)

_FRAMES_SCHEMA = Schema("id", "int64", {"text": "string", "n": "int64"})


def _framed_rows(count: int, salt: str) -> dict[Any, Row]:
    return {i: {"text": f"row {i:04d} {salt} " + "abcdefghij"[i % 10] * (i % 23), "n": i * 7919 % 1000}
            for i in range(count)}


MULTI_FRAME = Layered(
    "multi-frame",
    f"blobs cut into zstd frames of {SMALL_FRAMES} bytes of IPC data after a frame table (combe's own blobs "
    f"are cut at {FRAME_BYTES} bytes): snapshots, a delta and a reverse delta of several frames each",
    [
        Version(_framed_rows(100, "first"), _FRAMES_SCHEMA, snapshot=True),
        Version({**_framed_rows(100, "first"), **{i: r for i, r in _framed_rows(100, "second").items() if i % 2}},
                _FRAMES_SCHEMA),
        Version({i: r for i, r in _framed_rows(100, "third").items() if i % 3}, _FRAMES_SCHEMA, snapshot=True),
    ],
    frame_bytes=SMALL_FRAMES,
)

_LEGACY_SCHEMA = Schema("key", "string", {"title": "string", "year": "int64", "rating": "float64",
                                          "tags": "json", "extra": "null"})
_LEGACY_1: dict[Any, Row] = {
    "k1": {"title": "One", "year": 1, "rating": 100.0, "tags": {"p": 100.0, "q": [1e-07, 1e16]}},
    "k2": {"title": "Two", "year": 2, "rating": 0.5, "tags": {"\uffff": 1, "\U0001F600": 2}},
    "k3": {"title": "Three", "tags": ["keep me"]},
}
LEGACY = Layered(
    "legacy",
    "format version 1 manifests (sha256: state checksums; json text as combe wrote it then: Python's float "
    "spelling, names by code point), continued by the producer in format version 2 (h128: checksums, canonical "
    "json text for the records it writes, numbers and names chosen to show the form, the older text kept in "
    "the rest)",
    [
        Version(_LEGACY_1, _LEGACY_SCHEMA, snapshot=True, format_version=1, json_writer=_older_json_text),
        Version({**_LEGACY_1, "k4": {"title": "Four", "tags": {"r": 2.5e-05}}, "k3": {"title": "Three"}},
                _LEGACY_SCHEMA, format_version=1, json_writer=_older_json_text),
    ],
    then=Logged(
        "legacy", "",
        [
            [("k1", {"title": "One", "year": 1, "rating": 100.0, "tags": {"p": 100.0, "q": [1e-07, 1e16]}}),
             ("k5", {"title": "Five", "tags": [0.00001], "added": True}),
             ("k7", {"title": "Seven", "tags": CANONICAL_SHOWCASE})],
            [("k2", None), ("k6", {"title": "Six", "extra": "typed at last"}),
             ("k8", {"tags": {"\uffff": [], "\U0001F600": {}, "n": [None, True, 0, {"new": [1.5, -0.0]}]}})],
        ],
        snapshot_every=3,
    ),
)

SHARDED = Sharded(
    "sharded",
    "a sharded dataset of 3 shards (keys placed by murmur2): dataset versions that name the shard versions of "
    "every shard; a cycle that changes some shards only, so the next dataset version names the others' versions "
    "again; a column new in one shard (the others read it as null); a column that one shard has typed and "
    "another holds only nulls in; a key removed",
    3,
    [
        [("alpha", {"n": 1}), ("beta", {"n": 2}), ("gamma", {"n": 3}), ("delta", {"n": 4}), ("epsilon", {"n": 5}),
         ("", {"n": 0}), ("eta", {"n": 7}), ("\u00e9ta", {"n": 7}), ("lambda", {"n": 11})],
        [("alpha", {"n": 10, "note": "typed in shard 1"}), ("lambda", {"n": 12, "note": None})],
        [("beta", None), ("iota", {"n": 9, "extra": 1.5}), ("delta", {"n": 40}), ("eta", None)],
    ],
)

COMPOUND_KEYS = Logged(
    "compound-keys",
    "a compound key struct<tenant:int64,id:string>: message keys are JSON objects (fields in any order), stored "
    "as the canonical JSON array text of their values, sorted by its UTF-8 bytes ([10,... before [7,...); ids "
    "with escapes, non-ASCII and '/'; int64 extremes; tombstones",
    [
        [({"tenant": 7, "id": "x"}, {"name": "seven x"}), ({"id": "y", "tenant": 7}, {"name": "seven y"}),
         ({"tenant": 10, "id": "x"}, {"name": "ten x"}), ({"tenant": -(2**63), "id": "min"}, {"name": "min"}),
         ({"tenant": 2**63 - 1, "id": 'q"\\\n\u00e9/\U0001F601'}, {"name": "escapes"})],
        [({"id": "x", "tenant": 7}, {"name": "seven x, updated", "n": 1}), ({"tenant": 7, "id": "y"}, None),
         ({"tenant": 0, "id": ""}, {"name": "empty id"})],
        [({"tenant": 10, "id": "x"}, None), ({"tenant": 7, "id": "y"}, {"name": "seven y again"})],
    ],
    fmt=RecordFormat(key_type="struct<tenant:int64,id:string>"),
    snapshot_every=2,
)

CASES: list[Logged | Layered | Sharded] = [SCALARS, TYPED, INT_KEYS, BYTES_VALUES, TYPE_CHANGE, PINNED, EMPTIED,
                                           NESTED, GROWTH, MULTI_FRAME, LEGACY, SHARDED, COMPOUND_KEYS]


# -- writing ---------------------------------------------------------------------------------------------------


def _line(change: Change, fmt: RecordFormat) -> bytes:
    key, value = change
    if fmt.value_format == "bytes":  # kcat style: key|value, an empty value deletes
        return str(key).encode() + b"|" + (value or b"") + b"\n"
    return json.dumps({"key": key, "value": value}).encode() + b"\n"


def _publish(dataset: Dataset, path: Path, fmt: RecordFormat, stamps: Stamps, *, snapshot_every: int = 20,
             allow_schema_change: bool = False) -> None:
    """One producer cycle over the changelog at ``path`` (which names it in the manifest's source)."""
    options = PublishOptions(
        # Snapshots by version count only: the size rule would depend on what zstd makes of tiny blobs.
        fmt=fmt, snapshot_every=snapshot_every, snapshot_ratio=1e9, allow_schema_change=allow_schema_change,
        limits=Limits(max_removed=None, max_added=None, allow_empty_keys=True),
        producer_id=PRODUCER, new_uid=stamps.uid, clock=stamps.now)
    source = Changelog(path, f"changelogs/{path.name}", "|" if fmt.value_format == "bytes" else None)
    result = Publisher(dataset, source, options).run_cycle()
    assert result.outcome == "published", f"{dataset.label}: {result}"


def _publish_logged(case: Logged, dataset: Dataset, changelogs: Path, stamps: Stamps) -> None:
    path = changelogs / f"{case.name}.{'txt' if case.fmt.value_format == 'bytes' else 'jsonl'}"
    path.touch()
    for number, cycle in enumerate(case.cycles, start=1):
        with open(path, "ab") as handle:
            handle.writelines(_line(change, case.fmt) for change in cycle)
        _publish(dataset, path, case.fmt, stamps, snapshot_every=case.snapshot_every,
                 allow_schema_change=number == case.schema_change_at)
    if case.pin is not None:
        dataset.set_pin(case.pin)


def _publish_sharded(case: Sharded, dataset: Dataset, changelogs: Path, stamps: Stamps) -> None:
    """Each cycle: the changes appended to their shards' changelogs, a version of each shard they touch, a commit."""
    key_type = case.fmt.key_type
    sharding = dataset.create_sharding(Sharding(case.name, case.shard_count, "key", key_type, stamps.now(),
                                                PRODUCER))
    for number, cycle in enumerate(case.cycles, start=1):
        touched = sorted({partition_of(key, key_type, case.shard_count) for key, _ in cycle})
        for shard in touched:
            path = changelogs / f"{case.name}-{shard}.jsonl"
            with open(path, "ab") as handle:
                handle.writelines(_line(change, case.fmt) for change in cycle
                                  if partition_of(change[0], key_type, case.shard_count) == shard)
            _publish(dataset.shard(shard, case.shard_count), path, case.fmt, stamps)
        done = commit(dataset, sharding, producer=PRODUCER, clock=stamps.now)
        assert done.outcome == "committed" and done.version == number, f"{case.name} cycle {number}: {done}"


def _key_order(key: Any) -> Any:
    """Keys as a state orders them: strings by their UTF-8 bytes, integers numerically."""
    return key.encode() if isinstance(key, str) else key


def _table(state: dict[Any, Row], schema: Schema) -> pa.Table:
    keys = sorted(state, key=_key_order)
    rows = [{schema.key_field: k, **{name: state[k].get(name) for name in schema.columns}} for k in keys]
    return pa.Table.from_pylist(rows, schema=schema.to_arrow())


def _stored(state: dict[Any, Row], schema: Schema, json_writer: Callable[[Any], str]) -> dict[Any, Row]:
    """The records with json values as the text a writer stores."""
    jsons = [name for name, type_ in schema.columns.items() if type_ == "json"]
    return {key: {name: (json_writer(value) if name in jsons and value is not None else value)
                  for name, value in record.items()} for key, record in state.items()}


def _write_layered(case: Layered, dataset: Dataset, stamps: Stamps) -> None:
    before: dict[Any, Row] = {}
    snapshot_version = 0
    for version, spec in enumerate(case.versions, start=1):
        schema, after = spec.schema, _stored(spec.state, spec.schema, spec.json_writer)
        state = _table(after, schema)
        uid = stamps.uid()
        blobs: dict[str, tuple[str, bytes, int]] = {}

        def blob(path: str, table: pa.Table) -> tuple[str, bytes, int]:
            return path, compress(ipc_file_bytes(table), frame_bytes=case.frame_bytes), table.num_rows

        if version > 1:
            changed = sorted((k for k in before.keys() | after.keys() if before.get(k) != after.get(k)), key=_key_order)
            ops = [REMOVED if k not in after else UPDATED if k in before else ADDED for k in changed]
            undo = [ADDED if k not in after else UPDATED if k in before else REMOVED for k in changed]
            rows = _table({k: after.get(k, {}) for k in changed}, schema)
            old = _table({k: before.get(k, {}) for k in changed}, schema)
            blobs["delta"] = blob(delta_blob(version, uid), make_delta(rows, ops, schema))
            blobs["reverse"] = blob(reverse_blob(version, uid), make_delta(old, undo, schema))
        if spec.snapshot:
            blobs["snapshot"] = blob(snapshot_blob(version, uid), with_index(state, schema.key_field, schema.key_type))
            snapshot_version = version
        for path, data, _ in blobs.values():
            dataset.write_blob(path, data)
        refs = {name: BlobRef(path, len(data), sha256_hex(data), rows) for name, (path, data, rows) in blobs.items()}
        checksum = legacy_state_checksum(state) if spec.format_version == 1 else state_checksum(state)
        manifest = Manifest(
            dataset=dataset.name, version=version, parent=version - 1 or None, created_at=stamps.now(),
            producer=PRODUCER, schema=schema, value_format="json", record_count=state.num_rows,
            state_checksum=checksum, snapshot_version=snapshot_version, snapshot=refs.get("snapshot"),
            delta=refs.get("delta"), reverse=refs.get("reverse"), source_uri="format-layer", positions={},
            changes={}, format_version=spec.format_version)
        assert dataset.create_manifest(manifest)
        assert dataset.announce(Pointer(dataset.name, version, stamps.now(), PRODUCER),
                                dataset.announced().tag) is not None
        before = after


# -- what every version holds ----------------------------------------------------------------------------------


def json_form(value: Any, type_: str) -> Any:
    """A value as the expected files write it (corpus README, "Values"): binary as hex, maps as
    [key, value] pairs in stored order, json as its stored text; the rest as JSON has it."""
    if value is None:
        return None
    head = kind(type_)
    if head == "binary":
        return value.hex()
    if head == "list":
        return [json_form(item, list_item(type_)) for item in value]
    if head == "struct":
        return {name: json_form(value.get(name), field_type) for name, field_type in struct_fields(type_)}
    if head == "map":
        key_type, value_type = map_types(type_)
        return [[json_form(k, key_type), json_form(v, value_type)] for k, v in value]
    return value


def _rows(table: pa.Table, schema: Schema) -> list[Row]:
    types = {schema.key_field: schema.key_stored, **schema.columns}
    return [{name: json_form(row.get(name), types[name]) for name in types} for row in table.to_pylist()]


def _index(snapshot: pa.Table, key_type: str, keys: list[Any]) -> list[Row]:
    """For each key: its canonical bytes, CRC-32, bucket and row (null when absent), by the index the snapshot
    carries: what a second implementation can check its lookups against step by step."""
    rows = snapshot.column(INDEX_ROWS).to_pylist()
    ends = snapshot.column(INDEX_ENDS).to_pylist()
    stored = snapshot.column(0).to_pylist()
    out = []
    for key in keys:
        canonical = key_bytes(key, key_type)
        crc = key_hash(canonical)
        entry: Row = {"key": key, "bytes": canonical.hex(), "crc32": crc}
        if not rows:
            out.append({**entry, "bucket": None, "row": None})
            continue
        bucket = (crc * len(rows)) >> 32
        start = ends[bucket - 1] if bucket else 0
        found = [r for r in rows[start:ends[bucket]] if stored[r] == key]
        out.append({**entry, "bucket": bucket, "row": found[0] if found else None})
    return out


def _older_json_text(case: Logged | Layered) -> dict[int, list[Any]]:
    """Per version, the keys whose json text an older writer wrote (the rest is in the canonical form)."""
    if isinstance(case, Logged):
        return {}
    older: dict[int, list[Any]] = {}
    writers: dict[Any, Callable[[Any], str]] = {}
    before: dict[Any, Row] = {}
    for version, spec in enumerate(case.versions, start=1):
        writers.update({k: spec.json_writer for k, r in spec.state.items() if before.get(k) != r})
        writers = {k: w for k, w in writers.items() if k in spec.state}
        older[version] = sorted(k for k, w in writers.items() if w is not json_text)
        before = spec.state
    for version, cycle in enumerate(case.then.cycles if case.then else [], start=len(case.versions) + 1):
        for key, _ in cycle:
            writers.pop(key, None)
        older[version] = sorted(k for k, w in writers.items() if w is not json_text)
    return older


def _chain(dataset: Dataset, older: dict[int, list[Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The key type, and every version of a chain (a dataset, or a shard): schema, checksum, rows, lookups."""
    versions = []
    key_type = "string"
    for version in dataset.versions():
        manifest = dataset.manifest(version)
        schema = manifest.schema
        key_type = schema.key_type
        state = load_state(dataset, manifest).table()
        entry: dict[str, Any] = {
            "version": version, "format_version": manifest.format_version, "schema": schema.to_json(),
            "record_count": manifest.record_count, "state_checksum": manifest.state_checksum,
            "older_json_text": older.get(version, []), "rows": _rows(state, schema)}
        if manifest.snapshot is not None:
            snapshot = read_ipc(dataset.blob_ipc(manifest.snapshot), path=manifest.snapshot.path)
            keys = state.column(schema.key_field).to_pylist()
            keys += [key for key in ABSENT_KEYS[schema.key_stored] if key not in keys]
            entry["index"] = _index(snapshot, schema.key_stored, keys)
        versions.append(entry)
    return key_type, versions


def _announced(dataset: Dataset) -> dict[str, Any]:
    pointer = dataset.require_announced()
    return {"version": pointer.version, "pin": pointer.pin, "serving": pointer.serving}


def _expected(case: Logged | Layered | Sharded, dataset: Dataset) -> dict[str, Any]:
    if isinstance(case, Sharded):
        return _expected_sharded(case, dataset)
    key_type, versions = _chain(dataset, _older_json_text(case))
    return {"dataset": case.name, "about": case.about, "key_type": key_type, "announced": _announced(dataset),
            "versions": versions}


def _sharded_state(dataset: Dataset, version: int) -> tuple[ShardedManifest, pa.Table]:
    """A sharded dataset's version: its manifest, and the rows of every shard read in its schema, by key."""
    manifest = dataset.sharded_manifest(version)
    count = manifest.shard_count
    parts = [conform(load_state(dataset.shard(i, count), dataset.shard(i, count).manifest(part.version)).table(),
                     manifest.schema) for i, part in enumerate(manifest.shards)]
    return manifest, pa.concat_tables(parts).sort_by(manifest.schema.key_field)


def _expected_sharded(case: Sharded, dataset: Dataset) -> dict[str, Any]:
    """Every dataset version (its shard versions and all rows), and every shard's chain as a dataset's."""
    versions = []
    for version in dataset.versions():
        manifest, state = _sharded_state(dataset, version)
        versions.append({
            "version": version, "format_version": SHARDED_MANIFEST_FORMAT, "shard_versions": manifest.shard_versions,
            "schema": manifest.schema.to_json(), "record_count": manifest.record_count,
            "state_checksum": manifest.state_checksum, "rows": _rows(state, manifest.schema)})
    shards = []
    for index in range(case.shard_count):
        shard = dataset.shard(index, case.shard_count)
        shards.append({"shard": index, "head": _announced(shard), "versions": _chain(shard, {})[1]})
    return {"dataset": case.name, "about": case.about, "key_type": case.fmt.key_type,
            "shard_count": case.shard_count, "announced": _announced(dataset), "versions": versions,
            "shards": shards}


def _plain(row: Row, schema: Schema) -> str | None:
    """A record as tests/support/changelog.py's model compares it: json values parsed, floats as floats (an
    integer in a float64 column is stored as a float), bytes as text (latin-1 keeps every byte)."""
    plain = {}
    for name, value in row.items():
        type_ = schema.columns.get(name)
        if value is not None and type_ == "json" and isinstance(value, str):
            value = json.loads(value)
        elif isinstance(value, int) and not isinstance(value, bool) and type_ == "float64":
            value = float(value)
        elif isinstance(value, bytes):
            value = value.decode("latin-1")
        plain[name] = value
    return canon(plain, schema.key_field)


def _check_replay(case: Logged, dataset: Dataset, start: dict[Any, Row], first: int) -> None:
    """Each version the producer published holds the replay of the changelog on top of ``start``."""
    state = dict(start)
    for version, cycle in enumerate(case.cycles, start=first):
        for key, value in cycle:
            key = lookup_key(key, case.fmt.key_type)
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value if isinstance(value, dict) else {"value": value}
        state.update(case.converted.get(version, {}))
        manifest = dataset.manifest(version)
        schema = manifest.schema
        read = {row[schema.key_field]: _plain(row, schema) for row in load_state(dataset, manifest).table().to_pylist()}
        assert read == {key: _plain(record, schema) for key, record in state.items()}, \
            f"{case.name} version {version}: combe reads other than the replay of its changelog"


def _check_sharded(case: Sharded, dataset: Dataset) -> None:
    """Each dataset version holds the replay of every cycle so far, and each key is in the shard murmur2 gives."""
    state: dict[Any, Row] = {}
    for version, cycle in enumerate(case.cycles, start=1):
        for key, value in cycle:
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        manifest, table = _sharded_state(dataset, version)
        schema = manifest.schema
        read = {row[schema.key_field]: _plain(row, schema) for row in table.to_pylist()}
        assert read == {key: _plain(record, schema) for key, record in state.items()}, \
            f"{case.name} version {version}: combe reads other than the replay of its changelogs"
        for index, part in enumerate(manifest.shards):
            shard = dataset.shard(index, case.shard_count)
            keys = load_state(shard, shard.manifest(part.version)).table().column(0).to_pylist()
            assert all(partition_of(key, schema.key_type, case.shard_count) == index for key in keys)


def _check_layered(case: Layered, dataset: Dataset) -> None:
    for version, spec in enumerate(case.versions, start=1):
        manifest = dataset.manifest(version)
        expected = _table(_stored(spec.state, spec.schema, spec.json_writer), spec.schema)
        assert load_state(dataset, manifest).table().equals(expected), f"{case.name} version {version}"
        checksum = legacy_state_checksum if manifest.format_version == 1 else state_checksum
        assert checksum(expected) == manifest.state_checksum


# -- checksum vectors ------------------------------------------------------------------------------------------


def _hash_of(value: Any, type_: str) -> str:
    hashes, valid = value_hashes(pa.array([value], arrow_type(type_)), type_)
    return f"{int(hashes[0]):016x}" if valid[0] else "null"


VECTOR_VALUES: list[tuple[str, Any]] = [
    ("int64", 0), ("int64", -1), ("int64", 2**63 - 1), ("int64", -(2**63)),
    ("float64", 0.0), ("float64", -0.0), ("float64", 1.5), ("float64", 5e-324),
    ("bool", True), ("bool", False),
    ("string", ""), ("string", "a"), ("string", "12345678"), ("string", "123456789"), ("string", "\u00e9\U0001F600"),
    ("binary", b""), ("binary", b"\x00\xff"),
    ("json", '{"a":[1,2.5]}'),
    ("list<int64>", []), ("list<int64>", [1, None, 3]), ("list<list<string>>", [["a"], [], None]),
    ('struct<a:int64,"b c":string>', {"a": 1, "b c": None}), ('struct<a:int64,"b c":string>', {"a": None, "b c": None}),
    ("map<string,int64>", [("x", 1), ("y", None)]), ("map<string,int64>", [("y", None), ("x", 1)]),
    ("map<int64,list<bool>>", []), ("map<int64,list<bool>>", [(-1, [True, None])]),
]


# Keys whose shard vectors.json gives: bytes of every length modulo 4, and int64 keys as decimal text.
PARTITION_KEYS: list[tuple[str, Any]] = [
    ("string", ""), ("string", "a"), ("string", "21"), ("string", "hello"), ("string", "\u00e9\U0001F600"),
    ("string", "abcdefgh"), ("int64", 0), ("int64", -1), ("int64", 2**63 - 1), ("int64", -(2**63))]
PARTITION_COUNTS = (1, 3, 16)


def _vectors() -> dict[str, Any]:
    """Intermediate values of the state checksum, to check an implementation piece by piece."""
    row_schema = Schema("key", "string", {"n": "int64", "gone": "float64", "tags": "list<string>"})
    row = _table({"k": {"n": 7, "gone": None, "tags": ["a"]}}, row_schema)
    digest = int(row_digests(row)[0])
    lanes = digest_sum(np.array([digest], np.uint64))
    return {
        "tags": {name: f"{value:016x}" for name, value in TAGS.items() if name != "null"},
        "bytes_hash_tag_0": {text: f"{bytes_hash(text.encode(), 0):016x}" for text in ("", "a", "12345678",
                                                                                         "123456789")},
        "seeds": {name: f"{name_seed(name):016x}" for name in ("key", "n", "first name", "")},
        "values": [{"type": type_, "value": json_form(value, type_), "hash": _hash_of(value, type_)}
                   for type_, value in VECTOR_VALUES],
        "row": {"schema": row_schema.to_json(), "values": _rows(row, row_schema)[0],
                "digest": f"{digest:016x}", "hash": f"{lanes:032x}"},
        "partitions": [{"key": key, "key_type": key_type, "bytes": key_text(key, key_type).hex(),
                        "murmur2": murmur2(key_text(key, key_type)),
                        "shard": {str(n): partition_of(key, key_type, n) for n in PARTITION_COUNTS}}
                       for key_type, key in PARTITION_KEYS],
    }


# -- the run ---------------------------------------------------------------------------------------------------


# Lists written one item per line (rows, index entries, vectors); the items of _EXPANDED_ITEMS are objects, expanded.
_EXPANDED_ITEMS = ("versions", "datasets", "shards")
_ONE_PER_LINE = ("rows", "index", "values", "partitions", *_EXPANDED_ITEMS)


def _render(value: Any, indent: int, name: str | None = None) -> str:
    pad = " " * indent
    if isinstance(value, dict) and value:
        members = [f'{pad} {json.dumps(k)}: {_render(v, indent + 1, k)}' for k, v in value.items()]
        return "{\n" + ",\n".join(members) + "\n" + pad + "}"
    if isinstance(value, list) and value and name in _ONE_PER_LINE:
        items = [pad + " " + (_render(item, indent + 1) if name in _EXPANDED_ITEMS else json.dumps(item))
                 for item in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value)


def _dump(document: Any) -> bytes:
    """JSON, ASCII only, one row (or index entry, or vector) per line: diffs show which row changed."""
    return (_render(document, 0) + "\n").encode()


def write(directory: Path) -> None:
    """Write the corpus into ``directory``, replacing what an earlier run wrote there."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in GENERATED:
        target = directory / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    changelogs, expected = directory / "changelogs", directory / "expected"
    changelogs.mkdir()
    expected.mkdir()
    store = str(directory / "store")
    datasets = []
    for case in CASES:
        stamps = Stamps()
        dataset = Dataset.open(store, case.name)
        if isinstance(case, Logged):
            _publish_logged(case, dataset, changelogs, stamps)
            _check_replay(case, dataset, {}, 1)
        elif isinstance(case, Sharded):
            _publish_sharded(case, dataset, changelogs, stamps)
            _check_sharded(case, dataset)
        else:
            _write_layered(case, dataset, stamps)
            _check_layered(case, dataset)
            if case.then is not None:
                _publish_logged(case.then, dataset, changelogs, stamps)
                _check_replay(case.then, dataset, case.versions[-1].state, len(case.versions) + 1)
        (expected / f"{case.name}.json").write_bytes(_dump(_expected(case, dataset)))
        for dot in (directory / "store" / case.name).rglob(".*"):
            dot.unlink()  # the local store's lock file: not part of a dataset (FORMAT.md)
        datasets.append({"name": case.name, "about": case.about})
    (directory / "vectors.json").write_bytes(_dump(_vectors()))
    (directory / "corpus.json").write_bytes(_dump({
        "manifest_format": MANIFEST_FORMAT, "pointer_format": POINTER_FORMAT,
        "sharded_manifest_format": SHARDED_MANIFEST_FORMAT, "sharded_pointer_format": SHARDED_POINTER_FORMAT,
        "frame_bytes": FRAME_BYTES, "generated_by": "python -m tests.support.corpus (make corpus)",
        "datasets": datasets}))


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR)
