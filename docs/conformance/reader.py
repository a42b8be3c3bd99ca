"""An independent reader of combe stores, written from docs/FORMAT.md alone, checked against this corpus.

It uses pyarrow's IPC reader, python zstandard, json, hashlib, struct and
zlib, and no combe code: it is the proof that the document suffices, and a
worked example for a reader in another language (README.md, step by step).
Everything is plain Python on plain values, one row at a time: slow, and
easy to compare with the text of FORMAT.md.

    python docs/conformance/reader.py [CORPUS_DIR]

reads every version of every dataset of the corpus, forward from its
snapshot and backward by reverse deltas, and compares each state, checksum
and index lookup with ``expected/<dataset>.json``. It prints one line per
dataset and exits with 1 if anything differs.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc
import zstandard

# -- blobs (FORMAT.md "Blobs") -----------------------------------------------------------------------------------

SKIPPABLE = 0x184D2A5C
TABLE_TAG = b"combe-frames-v1\0"


class Refused(Exception):
    """Something in the store breaks FORMAT.md."""


def ipc_bytes(blob: bytes) -> bytes:
    """The Arrow IPC file inside a blob: every zstd frame decoded, in order, the skippable frame skipped."""
    sizes = None
    if len(blob) >= 8 and struct.unpack_from("<I", blob)[0] == SKIPPABLE:
        (length,) = struct.unpack_from("<I", blob, 4)
        table = blob[8:8 + length]
        if table[:16] != TABLE_TAG:
            raise Refused("a skippable frame that is not a combe frame table")
        (count,) = struct.unpack_from("<I", table, 16)
        if length != 20 + 16 * count:
            raise Refused(f"frame table of {length} bytes for {count} frames")
        sizes = [struct.unpack_from("<QQ", table, 20 + 16 * i) for i in range(count)]
        if 8 + length + sum(c for c, _ in sizes) != len(blob):
            raise Refused("the frame table does not cover the blob")
    # Decode across frames: one-shot decompress() stops at the skippable frame, decompressobj() without
    # read_across_frames returns nothing for it. FORMAT.md says so.
    ipc = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True).read()
    if sizes is not None and len(ipc) != sum(d for _, d in sizes):
        raise Refused("the frames hold other than the sizes their table says")
    return ipc


# -- types (FORMAT.md "Column types") ----------------------------------------------------------------------------

SCALARS = {"null": pa.null(), "bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(),
           "string": pa.string(), "binary": pa.binary(), "json": pa.string()}
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z0-9_]+|[<>,:]')


def parse_type(text: str) -> Any:
    """A type expression as a tree: "int64", ("list", T), ("struct", [(name, T)...]), ("map", K, V)."""
    tokens = _TOKENS.findall(text)
    if "".join(tokens) != text:
        raise Refused(f"type {text!r} has characters outside the grammar")
    at = 0

    def take() -> str:
        nonlocal at
        at += 1
        return tokens[at - 1]

    def one() -> Any:
        word = take()
        if word in SCALARS:
            return word
        if take() != "<":
            raise Refused(f"type {text!r}")
        if word == "list":
            tree: Any = ("list", one())
        elif word == "map":
            key = take()
            take()
            tree = ("map", key, one())
        elif word == "struct":
            fields: list[tuple[str, Any]] = []
            while tokens[at] != ">":
                if fields:
                    take()
                token = take()
                name = json.loads(token) if token.startswith('"') else token
                take()
                fields.append((name, one()))
            tree = ("struct", fields)
        else:
            raise Refused(f"unknown type {word!r} in {text!r}")
        if take() != ">":
            raise Refused(f"type {text!r}")
        return tree

    tree = one()
    if at != len(tokens):
        raise Refused(f"type {text!r} goes on after its end")
    return tree


def check_arrow(field: pa.Field, tree: Any, top: bool = True) -> None:
    """The field's Arrow type is the one FORMAT.md gives for the combe type (child names of lists and maps
    are not compared; struct field names are)."""
    data_type = field.type
    metadata = field.metadata or {}
    if top and (metadata.get(b"combe.type") == b"json") != (tree == "json"):
        raise Refused(f"column {field.name}: combe.type metadata does not match type {tree}")
    if isinstance(tree, str):
        if data_type != SCALARS[tree]:
            raise Refused(f"column {field.name}: Arrow {data_type} for {tree}")
    elif tree[0] == "list":
        if not pa.types.is_list(data_type):
            raise Refused(f"column {field.name}: Arrow {data_type} for a list")
        check_arrow(data_type.value_field, tree[1], False)
    elif tree[0] == "map":
        if not pa.types.is_map(data_type) or data_type.key_type != SCALARS[tree[1]]:
            raise Refused(f"column {field.name}: Arrow {data_type} for a map")
        check_arrow(data_type.item_field, tree[2], False)
    else:
        if not pa.types.is_struct(data_type) or [data_type.field(i).name for i in range(data_type.num_fields)] \
                != [name for name, _ in tree[1]]:
            raise Refused(f"column {field.name}: Arrow {data_type} for {tree}")
        for i, (_, child) in enumerate(tree[1]):
            check_arrow(data_type.field(i), child, False)


# -- the state checksum (FORMAT.md "State checksum") -------------------------------------------------------------

M64 = (1 << 64) - 1
K0, P = 0x243F6A8885A308D3, 0x9E3779B97F4A7C15
LANE_LO, LANE_HI, NULL_ITEM = 0x452821E638D01377, 0xBE5466CF34E90C6C, 0xC0AC29B7C97C50DD


def fmix(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & M64
    return x ^ (x >> 33)


def sequence(words: list[int], count: int, tag: int) -> int:
    acc = (K0 + count) & M64
    for word in words:
        acc = ((acc ^ word) * P) & M64
    return fmix(acc ^ tag)


def bytes_hash(data: bytes, tag: int) -> int:
    padded = data + b"\0" * (-len(data) % 8)
    return sequence([int.from_bytes(padded[i:i + 8], "little") for i in range(0, len(padded), 8)], len(data), tag)


TAG = {name: bytes_hash(name.encode(), 0) for name in
       ("bool", "int64", "float64", "string", "binary", "json", "list", "struct", "map", "name")}


def seed(name: str) -> int:
    return bytes_hash(name.encode(), TAG["name"])


def value_hash(value: Any, tree: Any) -> int:
    """h(v) of a non-null value, as pyarrow's to_pylist gives it (maps as (key, value) pairs)."""
    if tree == "int64":
        return fmix((value & M64) ^ TAG["int64"])
    if tree == "float64":
        return fmix(struct.unpack("<Q", struct.pack("<d", value))[0] ^ TAG["float64"])
    if tree == "bool":
        return fmix(int(value) ^ TAG["bool"])
    if tree in ("string", "json"):
        return bytes_hash(value.encode(), TAG[tree])
    if tree == "binary":
        return bytes_hash(value, TAG["binary"])
    if tree[0] == "list":
        return sequence([NULL_ITEM if item is None else value_hash(item, tree[1]) for item in value],
                        len(value), TAG["list"])
    if tree[0] == "struct":
        total = sum(((value_hash(value[name], t) ^ seed(name)) * P) & M64
                    for name, t in tree[1] if value[name] is not None)
        return fmix((total & M64) ^ TAG["struct"])
    total = 0
    for key, item in value:
        y = NULL_ITEM if item is None else value_hash(item, tree[2])
        total += fmix(value_hash(key, tree[1]) ^ ((y * P) & M64))
    return fmix((total & M64) ^ TAG["map"])


def row_digest(row: dict[str, Any], schema: list[tuple[str, Any]]) -> int:
    return sum(((value_hash(row[name], tree) ^ seed(name)) * P) & M64
               for name, tree in schema if row[name] is not None) & M64


def row_hash(row: dict[str, Any], schema: list[tuple[str, Any]]) -> int:
    digest = row_digest(row, schema)
    return (fmix(digest ^ LANE_HI) << 64) | fmix(digest ^ LANE_LO)


def h128(rows: list[dict[str, Any]], schema: list[tuple[str, Any]]) -> int:
    return sum(row_hash(row, schema) for row in rows) % (1 << 128)


def sha256_checksum(rows: list[dict[str, Any]], schema: list[tuple[str, Any]], types: list[str]) -> str:
    """Format version 1's checksum over the rows in key order."""
    out = hashlib.sha256(b"combe-state-v1\n" + len(rows).to_bytes(8, "little"))

    def bits(flags: list[bool]) -> bytes:
        packed = bytearray((len(flags) + 7) // 8)
        for i, flag in enumerate(flags):
            packed[i // 8] |= flag << (i % 8)
        return bytes(packed)

    for (name, tree), text in zip(schema, types):
        values = [row[name] for row in rows]
        out.update(len(name.encode()).to_bytes(4, "little") + name.encode() + text.encode() + b"\n")
        out.update(bits([v is not None for v in values]))
        if tree == "bool":
            out.update(bits([bool(v) for v in values]))
        elif tree in ("int64", "float64"):
            out.update(b"".join(struct.pack("<q" if tree == "int64" else "<d", 0 if v is None else v) for v in values))
        elif tree in ("string", "json", "binary"):
            data = [b"" if v is None else v if isinstance(v, bytes) else v.encode() for v in values]
            out.update(b"".join(len(d).to_bytes(8, "little") for d in data) + b"".join(data))
    return "sha256:" + out.hexdigest()


# -- canonical JSON text (FORMAT.md "Canonical JSON text") -------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def es_number(x: float) -> str:
    if x == 0:
        return "0"
    if x < 0:
        return "-" + es_number(-x)
    # The shortest round-trip digits, from repr, as s (k digits) and n: x = 0.s x 10^n.
    mantissa, _, exponent = repr(x).partition("e")
    whole, _, fraction = mantissa.partition(".")
    s = (whole + fraction).lstrip("0")
    n = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(s))
    s = s.rstrip("0")
    k = len(s)
    if k <= n <= 21:
        return s + "0" * (n - k)
    if 0 < n <= 21:
        return s[:n] + "." + s[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + s
    return s[0] + ("." + s[1:] if k > 1 else "") + "e" + ("+" if n - 1 > 0 else "-") + str(abs(n - 1))


def canonical(value: Any) -> str:
    if value is None or value is True or value is False:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return es_number(value)
    if isinstance(value, str):
        return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 else c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ",".join(canonical(item) for item in value) + "]"
    names = sorted(value, key=lambda name: name.encode("utf-16-be"))
    return "{" + ",".join(canonical(name) + ":" + canonical(value[name]) for name in names) + "}"


# -- reading versions (FORMAT.md "Reading a version") ------------------------------------------------------------

INDEX_ROWS, INDEX_ENDS, OP = "__combe_index_rows", "__combe_index_ends", "__combe_op"


class Dataset:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifests: dict[int, dict[str, Any]] = {}

    def manifest(self, version: int) -> dict[str, Any]:
        if version not in self.manifests:
            document = json.loads((self.root / "versions" / f"{version:012d}.json").read_bytes())
            if document["format_version"] not in (1, 2) or document["version"] != version:
                raise Refused(f"manifest of version {version}")
            parent = document["parent"]
            if (version == 1) != (parent is None) or (parent is not None and parent != version - 1):
                raise Refused(f"version {version} has parent {parent}")
            self.manifests[version] = document
        return self.manifests[version]

    def schema(self, version: int) -> list[tuple[str, Any]]:
        """Each column and its type tree; a compound key column (type struct<...>) is stored as a string."""
        schema = [(column["name"], parse_type(column["type"])) for column in self.manifest(version)["schema"]]
        return [(schema[0][0], "string" if self.key_fields(version) else schema[0][1]), *schema[1:]]

    def key_fields(self, version: int) -> list[tuple[str, Any]]:
        """The fields of a compound key (FORMAT.md "Compound keys"), [] for a string or int64 key."""
        manifest = self.manifest(version)
        tree = parse_type(manifest["key"]["type"])
        if manifest["schema"][0]["type"] != manifest["key"]["type"]:
            raise Refused(f"version {version}: the key column's type is not key.type")
        if tree in ("string", "int64"):
            return []
        if tree[0] != "struct" or not tree[1] or any(t not in ("string", "int64") for _, t in tree[1]):
            raise Refused(f"version {version}: key type {manifest['key']['type']} is not a key type")
        return list(tree[1])

    def table(self, version: int, kind: str) -> pa.Table:
        """A blob of a version, its sha256 and size checked against the manifest, its columns against the
        schema of the manifest that references it."""
        ref = self.manifest(version)["blobs"][kind]
        v = version
        pattern = {"snapshot": rf"blobs/snapshot-{v}-[0-9a-f]{{32}}\.arrow\.zst",
                   "delta": rf"blobs/delta-{v - 1}-{v}-[0-9a-f]{{32}}\.arrow\.zst",
                   "reverse": rf"blobs/reverse-{v}-{v - 1}-[0-9a-f]{{32}}\.arrow\.zst"}[kind]
        if not re.fullmatch(pattern, ref["path"]):
            raise Refused(f"version {version}: {kind} blob named {ref['path']}")
        blob = (self.root / ref["path"]).read_bytes()
        if hashlib.sha256(blob).hexdigest() != ref["sha256"] or len(blob) != ref["bytes"]:
            raise Refused(f"{ref['path']}: sha256 or size differs from the manifest")
        table = pa.ipc.open_file(pa.BufferReader(ipc_bytes(blob))).read_all()
        schema = self.schema(version)
        reserved = {"snapshot": [INDEX_ROWS, INDEX_ENDS], "delta": [OP], "reverse": [OP]}[kind]
        if table.column_names != [name for name, _ in schema] + reserved or table.num_rows != ref["rows"]:
            raise Refused(f"{ref['path']}: columns {table.column_names} or rows differ from the manifest")
        for (_, tree), field in zip(schema, table.schema):
            check_arrow(field, tree)
        if table.schema.field(0).nullable:
            raise Refused(f"{ref['path']}: the key column is nullable")
        fields = self.key_fields(version)
        for key in table.column(0).to_pylist() if fields else []:
            values = json.loads(key)
            if not isinstance(values, list) or len(values) != len(fields) or canonical(values) != key or not all(
                    isinstance(v, str) if t == "string" else type(v) is int and -2**63 <= v < 2**63
                    for v, (_, t) in zip(values, fields)):
                raise Refused(f"{ref['path']}: key {key!r} is not the canonical JSON array of the key's fields")
        return table


def key_order(key: Any) -> Any:
    """Strings by their UTF-8 bytes, integers numerically."""
    return key.encode() if isinstance(key, str) else key


def rows_of(table: pa.Table, schema: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    names = [name for name, _ in schema]
    return [{name: row[name] for name in names} for row in table.to_pylist()]


def check_sorted(keys: list[Any], where: str) -> None:
    ordered = [key_order(k) for k in keys]
    if any(a >= b for a, b in zip(ordered, ordered[1:])):
        raise Refused(f"{where}: keys not in ascending order, or repeated")


def crc_bucket(key: Any, count: int) -> tuple[bytes, int, int]:
    canonical_bytes = key.encode() if isinstance(key, str) else struct.pack("<q", key)
    crc = zlib.crc32(canonical_bytes)
    return canonical_bytes, crc, (crc * count) >> 32


def lookup(table: pa.Table, key: Any) -> int | None:
    """The row of ``key`` through the snapshot's index; n = 0 has no buckets."""
    rows, ends = table.column(INDEX_ROWS).to_pylist(), table.column(INDEX_ENDS).to_pylist()
    if not rows:
        return None
    _, _, bucket = crc_bucket(key, len(rows))
    start = ends[bucket - 1] if bucket else 0
    keys = table.column(0)
    for row in rows[start:ends[bucket]]:
        if keys[row].as_py() == key:
            return row
    return None


State = dict[Any, dict[str, Any]]


def load(dataset: Dataset, version: int, checks: list[str]) -> State:
    """The state of ``version``: its snapshot, then forward deltas; every checksum on the way verified, in full
    at the snapshot, incrementally at each delta (format version 2)."""
    target = dataset.manifest(version)
    start = target["snapshot_version"]
    snapshot = dataset.table(start, "snapshot")
    schema = dataset.schema(start)
    if (snapshot.schema.metadata or {}).get(b"combe.index") != b"crc32-fastrange-v1":
        raise Refused(f"snapshot {start} has no known index scheme")
    rows = rows_of(snapshot, schema)
    check_sorted([row[schema[0][0]] for row in rows], f"snapshot {start}")
    for number, row in enumerate(rows):
        if lookup(snapshot, row[schema[0][0]]) != number:
            raise Refused(f"snapshot {start}: the index does not find key {row[schema[0][0]]!r}")
    state = {row[schema[0][0]]: row for row in rows}
    checksum = verify_full(dataset, start, state, checks)
    for v in range(start + 1, version + 1):
        state, checksum = apply(dataset, v, "delta", state, checksum, checks)
    return state


def verify_full(dataset: Dataset, version: int, state: State, checks: list[str]) -> int | None:
    """The checksum of a whole state, compared with the manifest's; the h128 sum, for what follows."""
    manifest, schema = dataset.manifest(version), dataset.schema(version)
    rows = [state[k] for k in sorted(state, key=key_order)]
    if len(rows) != manifest["record_count"]:
        raise Refused(f"version {version}: {len(rows)} records, manifest says {manifest['record_count']}")
    recorded = manifest["state_checksum"]
    if recorded.startswith("sha256:"):
        types = [column["type"] for column in manifest["schema"]]
        if sha256_checksum(rows, schema, types) != recorded:
            raise Refused(f"version {version}: sha256 state checksum differs")
        checks.append(f"v{version} sha256 checksum")
        return None
    total = h128(rows, schema)
    if f"h128:{total:032x}" != recorded:
        raise Refused(f"version {version}: state checksum h128:{total:032x}, manifest {recorded}")
    checks.append(f"v{version} h128 checksum in full")
    return total


def read_as(row: dict[str, Any], schema: list[tuple[str, Any]], where: str) -> dict[str, Any]:
    """A row read in another version's schema (FORMAT.md "Schema evolution"): what the schema lacks (a column,
    a struct field) must be null and is dropped, what the row lacks is null, and what the schema types `null`
    must be null."""
    return reshape(row, ("struct", schema), where)


def reshape(value: Any, tree: Any, where: str) -> Any:
    if value is None:
        return None
    if tree == "null":
        raise Refused(f"{where}: a value where the schema has only nulls")
    if isinstance(tree, str):
        return value
    if tree[0] == "list":
        return [reshape(item, tree[1], where) for item in value]
    if tree[0] == "map":
        return [(key, reshape(item, tree[2], where)) for key, item in value]
    names = {name for name, _ in tree[1]}
    if any(item is not None for name, item in value.items() if name not in names):
        raise Refused(f"{where}: a value in a column or struct field the schema lacks")
    return {name: reshape(value.get(name), child, where) for name, child in tree[1]}


def apply(dataset: Dataset, version: int, kind: str, state: State, checksum: int | None,
          checks: list[str]) -> tuple[State, int | None]:
    """Version ``version``'s delta (to it) or reverse delta (from it back to version - 1) applied to ``state``;
    the state then read in the schema of the version reached."""
    table = dataset.table(version, kind)
    schema = dataset.schema(version)  # a reverse delta is in the schema of the version it leads back from
    reached = version if kind == "delta" else version - 1
    target = dataset.schema(reached)
    key = schema[0][0]
    keys = table.column(0).to_pylist()
    check_sorted(keys, f"{kind} of version {version}")
    state = {k: read_as(row, schema, f"version {version - 1}") for k, row in state.items()}  # forward: growth
    removed = added = 0
    for row, op in zip(rows_of(table, schema), table.column(OP).to_pylist()):
        k = row[key]
        if (op == 1) == (k in state) or op not in (1, 2, 3):
            raise Refused(f"{kind} of version {version}: op {op} for key {k!r} does not fit the state")
        if k in state:
            removed += row_hash(state.pop(k), schema)
        if op == 3:
            if any(row[name] is not None for name, _ in schema[1:]):
                raise Refused(f"{kind} of version {version}: a removal with values")
        else:
            state[k] = row
            added += row_hash(row, schema)
    projected = {k: read_as(row, target, f"version {reached}, key {k!r}") for k, row in state.items()}
    if checksum is not None and dataset.manifest(reached)["format_version"] == 2:
        incremental = (checksum - removed + added) % (1 << 128)
        if f"h128:{incremental:032x}" != dataset.manifest(reached)["state_checksum"]:
            raise Refused(f"version {reached}: the checksum advanced by the {kind} differs from the manifest's")
        checks.append(f"v{reached} h128 checksum advanced by the {kind}")
    return projected, verify_full(dataset, reached, projected, checks)


# -- comparing with the expected files (README.md "Values") ------------------------------------------------------


def json_form(value: Any, tree: Any) -> Any:
    if value is None:
        return None
    if tree == "binary":
        return value.hex()
    if isinstance(tree, str):
        return value
    if tree[0] == "list":
        return [json_form(item, tree[1]) for item in value]
    if tree[0] == "struct":
        return {name: json_form(value[name], t) for name, t in tree[1]}
    return [[json_form(k, tree[1]), json_form(v, tree[2])] for k, v in value]


def same(a: Any, b: Any) -> bool:
    """Equal, floats by their bits (-0.0 is not 0.0)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, float) and isinstance(b, float) and struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def compare_rows(schema: list[tuple[str, Any]], state: State, expected: dict[str, Any], how: str) -> None:
    version = expected["version"]
    rows = [{name: json_form(state[k][name], tree) for name, tree in schema} for k in sorted(state, key=key_order)]
    for got, want in zip(rows, expected["rows"]):
        if not same(got, want):
            raise Refused(f"version {version} ({how}): row {got} but expected {want}")
    if len(rows) != len(expected["rows"]):
        raise Refused(f"version {version} ({how}): {len(rows)} rows, expected {len(expected['rows'])}")


def compare(dataset: Dataset, state: State, expected: dict[str, Any], how: str) -> None:
    version = expected["version"]
    schema = dataset.schema(version)
    compare_rows(schema, state, expected, how)
    rows = [{name: json_form(state[k][name], tree) for name, tree in schema} for k in sorted(state, key=key_order)]
    if dataset.manifest(version)["state_checksum"] != expected["state_checksum"]:
        raise Refused(f"version {version}: the manifest's checksum is not the expected one")
    older = set(expected["older_json_text"])  # keys whose text an older writer wrote
    for row in rows:
        for name, tree in schema:
            if tree == "json" and row[name] is not None and row[schema[0][0]] not in older \
                    and canonical(json.loads(row[name])) != row[name]:
                raise Refused(f"version {version}: json text {row[name]!r} is not canonical")


def check_index(dataset: Dataset, expected: dict[str, Any]) -> int:
    version = expected["version"]
    snapshot = dataset.table(version, "snapshot")
    for entry in expected["index"]:
        key = entry["key"]
        canonical_bytes, crc, bucket = crc_bucket(key, snapshot.num_rows)
        if (canonical_bytes.hex(), crc) != (entry["bytes"], entry["crc32"]) or lookup(snapshot, key) != entry["row"] \
                or (snapshot.num_rows and bucket != entry["bucket"]):
            raise Refused(f"version {version}: lookup of {key!r} differs from the expected {entry}")
    return len(expected["index"])


def pointer(path: Path, format_version: int, expected: dict[str, Any]) -> dict[str, Any]:
    """``announced.json`` (or a shard's ``head.json``): the version to serve is the pin, else the version."""
    announced = json.loads(path.read_bytes())
    serving = announced["pin"] if announced["pin"] is not None else announced["version"]
    if announced["format_version"] != format_version or {"version": announced["version"], "pin": announced["pin"],
                                                         "serving": serving} != expected:
        raise Refused(f"{path.name} says {announced}, expected {expected}")
    return announced


def check_dataset(root: Path, expected: dict[str, Any], announcement: str = "announced.json") -> list[str]:
    """Every check of one dataset (or one shard's chain, announced by ``head.json``); Refused at the first
    difference."""
    dataset = Dataset(root)
    checks: list[str] = []
    announced = pointer(root / announcement, 1, expected["head" if announcement == "head.json" else "announced"])
    by_version = {entry["version"]: entry for entry in expected["versions"]}
    newest = max(by_version)
    if newest != announced["version"] or sorted(by_version) != list(range(1, newest + 1)):
        raise Refused("the versions are not 1 to the announced one")
    for version, entry in by_version.items():
        manifest = dataset.manifest(version)
        has_snapshot = manifest["blobs"]["snapshot"] is not None
        if has_snapshot != (manifest["snapshot_version"] == version) or has_snapshot != ("index" in entry):
            raise Refused(f"version {version}: snapshot_version and snapshot blob disagree")
        compare(dataset, load(dataset, version, checks), entry, "forward")
        checks.append(f"v{version} state forward")
        if has_snapshot:
            checks.append(f"v{version} {check_index(dataset, entry)} lookups")
    # Backward from the newest version, by reverse deltas; a version without one (a schema change) is reached
    # from its own snapshot and the walk goes on from there.
    state, checksum = load(dataset, newest, checks), None
    for version in range(newest, 1, -1):
        if dataset.manifest(version)["blobs"]["reverse"] is None:
            state = load(dataset, version - 1, checks)
            checksum = None
            continue
        if checksum is None and dataset.manifest(version)["format_version"] == 2:
            checksum = h128(list(state.values()), dataset.schema(version))
        state, checksum = apply(dataset, version, "reverse", state, checksum, checks)
        compare(dataset, state, by_version[version - 1], "backward")
        checks.append(f"v{version - 1} state backward")
    return checks


# -- sharded datasets (FORMAT.md "Sharded datasets") -------------------------------------------------------------


def murmur2(data: bytes) -> int:
    m, h = 0x5BD1E995, (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = (int.from_bytes(data[i:i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = data[whole:]
    if len(rest) == 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h = ((h ^ rest[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def key_text(key: Any) -> bytes:
    """The bytes a key is sharded by: UTF-8 of a string key, the decimal text of an int64 key."""
    return key.encode() if isinstance(key, str) else str(key).encode("ascii")


def shard_of(key: Any, count: int) -> int:
    return (murmur2(key_text(key)) & 0x7FFFFFFF) % count


def check_sharded(root: Path, expected: dict[str, Any]) -> list[str]:
    """A sharded dataset: each shard's chain checked as a dataset's, then every dataset version assembled from the
    shard versions its sharded manifest names, read in its schema, and compared."""
    sharding = json.loads((root / "shards.json").read_bytes())
    count = sharding["shard_count"]
    if sharding["format_version"] != 1 or sharding["partitioner"] != "murmur2" or count != expected["shard_count"]:
        raise Refused(f"shards.json says {sharding}")
    announced = pointer(root / "announced.json", 2, expected["announced"])
    if announced["shard_count"] != count:
        raise Refused("announced.json and shards.json disagree on the shard count")
    checks: list[str] = []
    shards = [Dataset(root / "shards" / str(i)) for i in range(count)]
    for i, (shard, chain) in enumerate(zip(shards, expected["shards"])):
        try:
            checks += check_dataset(shard.root, chain, "head.json")
        except Refused as exc:
            raise Refused(f"shard {i}: {exc}") from None
    for entry in expected["versions"]:
        version = entry["version"]
        manifest = json.loads((root / "versions" / f"{version:012d}.json").read_bytes())
        if manifest["format_version"] != 3 or manifest["version"] != version or manifest["shard_count"] != count \
                or manifest["parent"] != (version - 1 if version > 1 else None) or len(manifest["shards"]) != count:
            raise Refused(f"sharded manifest of version {version}")
        schema = [(column["name"], parse_type(column["type"])) for column in manifest["schema"]]
        state: State = {}
        total = 0
        for i, (shard, part) in enumerate(zip(shards, manifest["shards"])):
            named = shard.manifest(part["version"])
            if named.get("shard") != {"index": i, "count": count} or named["key"] != manifest["key"] \
                    or named["value_format"] != manifest["value_format"] \
                    or (named["record_count"], named["state_checksum"]) != (part["record_count"],
                                                                           part["state_checksum"]):
                raise Refused(f"version {version}: shard {i}'s version {part['version']} is not what it names")
            for key, row in load(shard, part["version"], []).items():
                if shard_of(key, count) != i:
                    raise Refused(f"shard {i} holds key {key!r}, which murmur2 places in shard {shard_of(key, count)}")
                state[key] = read_as(row, schema, f"version {version}, shard {i}, key {key!r}")
            total += int(part["state_checksum"].removeprefix("h128:"), 16)
        rows = list(state.values())
        if len(rows) != manifest["record_count"] or f"h128:{total % (1 << 128):032x}" != manifest["state_checksum"] \
                or f"h128:{h128(rows, schema):032x}" != manifest["state_checksum"]:
            raise Refused(f"version {version}: record count or state checksum is not the shards' sum")
        if [part["version"] for part in manifest["shards"]] != entry["shard_versions"]:
            raise Refused(f"version {version} names shard versions other than the expected ones")
        compare_rows(schema, state, entry, "assembled")
        checks.append(f"v{version} assembled from {count} shards")
    return checks


def check_vectors(vectors: dict[str, Any]) -> list[str]:
    """This reader's checksum pieces against vectors.json."""
    for name, value in vectors["tags"].items():
        if f"{TAG[name]:016x}" != value:
            raise Refused(f"TAG({name})")
    for text, value in vectors["bytes_hash_tag_0"].items():
        if f"{bytes_hash(text.encode(), 0):016x}" != value:
            raise Refused(f"bytes_hash({text!r}, 0)")
    for name, value in vectors["seeds"].items():
        if f"{seed(name):016x}" != value:
            raise Refused(f"seed({name!r})")
    for entry in vectors["values"]:
        tree = parse_type(entry["type"])
        value = from_json_form(entry["value"], tree)
        if f"{value_hash(value, tree):016x}" != entry["hash"]:
            raise Refused(f"h({entry['value']!r}) as {entry['type']}")
    row = vectors["row"]
    schema = [(c["name"], parse_type(c["type"])) for c in row["schema"]]
    values = {name: from_json_form(row["values"][name], tree) for name, tree in schema}
    if f"{row_digest(values, schema):016x}" != row["digest"] or f"{row_hash(values, schema):032x}" != row["hash"]:
        raise Refused("the row vector")
    for entry in vectors["partitions"]:
        data = key_text(entry["key"])
        shards = {str(count): shard_of(entry["key"], count) for count in map(int, entry["shard"])}
        if (data.hex(), murmur2(data), shards) != (entry["bytes"], entry["murmur2"], entry["shard"]):
            raise Refused(f"the shard of {entry['key']!r}")
    return [f"{len(vectors['values'])} value hashes, tags, seeds, a row, {len(vectors['partitions'])} shards"]


def from_json_form(value: Any, tree: Any) -> Any:
    """Back from the expected files' form to what to_pylist gives."""
    if value is None:
        return None
    if tree == "binary":
        return bytes.fromhex(value)
    if isinstance(tree, str):
        return float(value) if tree == "float64" else value
    if tree[0] == "list":
        return [from_json_form(item, tree[1]) for item in value]
    if tree[0] == "struct":
        return {name: from_json_form(value[name], t) for name, t in tree[1]}
    return [(from_json_form(k, tree[1]), from_json_form(v, tree[2])) for k, v in value]


def check_corpus(corpus: Path) -> dict[str, list[str] | str]:
    """Each dataset's checks (or the first difference, as text), and the vectors'."""
    results: dict[str, list[str] | str] = {}
    try:
        results["vectors.json"] = check_vectors(json.loads((corpus / "vectors.json").read_bytes()))
    except (Refused, KeyError) as exc:
        results["vectors.json"] = f"{type(exc).__name__}: {exc}"
    for path in sorted((corpus / "expected").glob("*.json")):
        expected = json.loads(path.read_bytes())
        try:
            check = check_sharded if "shard_count" in expected else check_dataset
            results[expected["dataset"]] = check(corpus / "store" / expected["dataset"], expected)
        except (Refused, KeyError, OSError, pa.ArrowException, zstandard.ZstdError) as exc:
            results[expected["dataset"]] = f"{type(exc).__name__}: {exc}"
    return results


def main() -> int:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    failed = 0
    for name, result in check_corpus(corpus).items():
        if isinstance(result, str):
            failed += 1
            print(f"FAIL {name}: {result}")
        else:
            print(f"ok   {name}: {len(result)} checks")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
