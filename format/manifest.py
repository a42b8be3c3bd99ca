"""Manifests, the announcement and the pin: the JSON documents of a dataset.

Every field is checked on read, so a malformed, truncated or foreign document
is one clear FormatError naming the path and the field, never a KeyError
from deep inside a reader.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import pyarrow as pa

from .checksum import LEGACY_PREFIX, is_checksum
from .delta import OP_COLUMN
from .errors import ConfigError, FormatError, IntegrityError
from .index import INDEX_ENDS, INDEX_ROWS
from .layout import (MANIFEST_FORMAT, POINTER_FORMAT, READABLE_MANIFESTS, READABLE_POINTERS, SHARDED_MANIFEST_FORMAT,
                     SHARDED_POINTER_FORMAT, check_blob_path, check_dataset_name)
from .keys import check_key_type
from .schema import RESERVED_PREFIX, VALUE_FORMATS, Schema
from .types import type_of_field


T = TypeVar("T")


# The one form of every time in a document: UTC, microseconds, a Z (2026-11-27T01:02:03.000000Z).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> str:
    """Now, as documents record it."""
    return time_text(datetime.now(timezone.utc))


def time_text(moment: datetime) -> str:
    """An aware datetime as documents record it."""
    return moment.astimezone(timezone.utc).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """A document's time as an aware UTC datetime; FormatError for text not in TIME_FORMAT.

    Documents are checked on read (``created_at``, ``at``), so a reader of a
    Manifest or Pointer never meets the error.
    """
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise FormatError(f"{text!r} is not a UTC time like 2026-11-27T01:02:03.000000Z") from None


# Version tags (``combe publish --tag KEY=VALUE``): string labels of a version, like Hollow's header tags.
MAX_TAGS = 64
MAX_TAG_VALUE = 1024
_TAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")


def check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags as a dict sorted by key; ConfigError naming the first tag that breaks a rule.

    Keys are 1-128 letters, digits, ``.``, ``_``, ``:``, ``/`` or ``-``
    starting with a letter or digit; values are strings of at most
    MAX_TAG_VALUE characters with no control characters (they are printed by
    ``combe inspect`` and shown in the explorer); at most MAX_TAGS tags.
    """
    if not isinstance(tags, Mapping):
        raise ConfigError(f"tags must be a mapping of strings to strings, not {type(tags).__name__}")
    if len(tags) > MAX_TAGS:
        raise ConfigError(f"{len(tags)} tags given; a version holds at most {MAX_TAGS}")
    for key, value in tags.items():
        if not isinstance(key, str) or not _TAG_KEY.fullmatch(key):
            raise ConfigError(f"tag key {key!r:.150}: use 1-128 letters, digits, '.', '_', ':', '/' or '-', "
                              "starting with a letter or digit")
        if not isinstance(value, str):
            raise ConfigError(f"tag {key}: the value must be a string, not {type(value).__name__}")
        if len(value) > MAX_TAG_VALUE:
            raise ConfigError(f"tag {key}: the value has {len(value)} characters; at most {MAX_TAG_VALUE}")
        if any(unicodedata.category(c) == "Cc" for c in value):
            raise ConfigError(f"tag {key}: the value {value!r:.150} holds a control character")
    return dict(sorted(tags.items()))


def _time_text(text: str) -> str:
    parse_time(text)
    return text


class _Fields:
    """Typed field access on a parsed JSON object, with errors that name document and field."""

    def __init__(self, obj: Any, path: str, where: str = "") -> None:
        if not isinstance(obj, dict):
            raise FormatError(f"{path}: {where or 'document'} must be a JSON object", path=path)
        self.obj, self.path, self.where = obj, path, where

    def get(self, name: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
        label = f"{self.where}.{name}" if self.where else name
        if name not in self.obj or self.obj[name] is None:
            if optional:
                return None
            raise FormatError(f"{self.path}: field {label!r} is missing", path=self.path)
        value = self.obj[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise FormatError(f"{self.path}: field {label!r} has the wrong type ({type(value).__name__})",
                              path=self.path)
        return value

    def checked(self, name: str, kind: type | tuple[type, ...], check: Callable[[Any], T]) -> T:
        """A field passed through ``check``, whose complaint becomes a FormatError naming document and field."""
        value = self.get(name, kind)
        try:
            return check(value)
        except (ConfigError, FormatError) as exc:
            label = f"{self.where}.{name}" if self.where else name
            raise FormatError(f"{self.path}: field {label!r}: {exc}", path=self.path) from exc

    def nested(self, name: str, *, optional: bool = False) -> _Fields | None:
        value = self.get(name, dict, optional=optional)
        return None if value is None else _Fields(value, self.path, f"{self.where}.{name}" if self.where else name)


# Signs a document before it is written, or checks one as read (format/signing.py, through Dataset).
Sign = Callable[[dict[str, Any]], dict[str, Any]]
Verify = Callable[[dict[str, Any]], object]


def _parse(data: bytes, path: str, readable: tuple[int, ...], other: dict[int, str] | None = None,
           verify: Verify | None = None) -> _Fields:
    """The document's fields once its format_version is one of ``readable`` (and its signature checks out,
    given ``verify``).

    ``other`` names the documents of another kind that share the path and
    what they are (a sharded dataset's version in ``versions/``), so that a
    reader asking for the wrong kind is told what it found.
    """
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"{path} is not valid JSON (truncated or corrupted?): {exc}", path=path) from exc
    fields = _Fields(obj, path)
    found = fields.get("format_version", int)
    if other and found in other:
        raise FormatError(f"{path} (format_version {found}) is {other[found]}", path=path)
    if found not in readable:
        raise FormatError(f"{path} has format_version {found}; this combe reads version "
                          f"{' and '.join(map(str, readable))}. Upgrade combe to read it.", path=path)
    if verify is not None:
        verify(obj)  # before any field is read: a reader with trusted keys uses nothing unsigned or forged
    return fields


def _dump(document: dict[str, Any], sign: Sign | None = None) -> bytes:
    return json.dumps(sign(document) if sign else document, indent=1, sort_keys=False).encode() + b"\n"


# What a sharded manifest is, for a reader that expected another document there.
SHARDED_VERSION = ("a version of a sharded dataset, which names a version of each shard and holds no blobs: read it "
                   "with a Consumer or combe serve; this command handles unsharded datasets only")


@dataclass(frozen=True)
class BlobRef:
    """A blob a manifest references: where it is, how big, its sha256, how many rows."""

    path: str
    bytes: int
    sha256: str
    rows: int

    @classmethod
    def parse(cls, fields: _Fields) -> BlobRef:
        ref = cls(
            path=fields.checked("path", str, check_blob_path),
            bytes=fields.get("bytes", int),
            sha256=fields.get("sha256", str),
            rows=fields.get("rows", int),
        )
        if len(ref.sha256) != 64 or any(c not in "0123456789abcdef" for c in ref.sha256):
            raise FormatError(f"{fields.path}: {fields.where}.sha256 is not a sha256 hex digest", path=fields.path)
        return ref


@dataclass(frozen=True)
class Manifest:
    """One immutable version of a dataset (docs/FORMAT.md, "Manifest")."""

    dataset: str
    version: int
    parent: int | None
    created_at: str
    producer: str
    schema: Schema
    value_format: str
    record_count: int
    state_checksum: str
    snapshot_version: int
    snapshot: BlobRef | None
    delta: BlobRef | None
    reverse: BlobRef | None
    source_uri: str
    positions: dict[str, dict[str, int]]
    changes: dict[str, int] = field(default_factory=dict)
    schema_change: bool = False
    tags: dict[str, str] = field(default_factory=dict)  # check_tags; {} in manifests written before tags
    # (shard, shard count) of a shard's manifest in a sharded dataset; None in an unsharded dataset.
    shard: tuple[int, int] | None = None
    # The format this manifest was read in (1: sha256 state checksum, scalar types only), or is written in.
    format_version: int = MANIFEST_FORMAT

    def to_json(self, sign: Sign | None = None) -> bytes:
        shard = {} if self.shard is None else {"shard": {"index": self.shard[0], "count": self.shard[1]}}
        return _dump({
            "format_version": self.format_version,
            "dataset": self.dataset,
            "version": self.version,
            "parent": self.parent,
            "created_at": self.created_at,
            "producer": self.producer,
            "key": {"field": self.schema.key_field, "type": self.schema.key_type},
            "schema": self.schema.to_json(),
            "value_format": self.value_format,
            "record_count": self.record_count,
            "state_checksum": self.state_checksum,
            "snapshot_version": self.snapshot_version,
            "blobs": {name: (asdict(ref) if ref else None)
                      for name, ref in (("snapshot", self.snapshot), ("delta", self.delta), ("reverse", self.reverse))},
            "source": {"uri": self.source_uri, "positions": self.positions},
            "changes": self.changes,
            "schema_change": self.schema_change,
            "tags": dict(sorted(self.tags.items())),
            **shard,
        }, sign)

    @classmethod
    def from_json(cls, data: bytes, path: str, verify: Verify | None = None) -> Manifest:
        fields = _parse(data, path, READABLE_MANIFESTS, {SHARDED_MANIFEST_FORMAT: SHARDED_VERSION}, verify)
        key = fields.nested("key")
        assert key is not None
        try:
            key_type = check_key_type(key.get("type", str))
        except FormatError as exc:
            raise FormatError(f"{path}: key.type: {exc}", path=path) from None
        key_field = key.get("field", str)
        schema = fields.checked("schema", list, lambda columns: Schema.from_json(key_field, key_type, columns))
        blobs = fields.nested("blobs")
        assert blobs is not None
        refs = {name: (BlobRef.parse(nested) if (nested := blobs.nested(name, optional=True)) else None)
                for name in ("snapshot", "delta", "reverse")}
        source = fields.nested("source")
        assert source is not None
        positions = source.get("positions", dict)
        if not all(isinstance(parts, dict) and all(isinstance(o, int) for o in parts.values())
                   for parts in positions.values()):
            raise FormatError(f"{path}: source.positions must map streams to {{partition: offset}}", path=path)
        value_format = fields.get("value_format", str)
        if value_format not in VALUE_FORMATS:
            raise FormatError(f"{path}: value_format {value_format!r} is not one of {VALUE_FORMATS}", path=path)
        manifest = cls(
            dataset=fields.checked("dataset", str, check_dataset_name),
            version=fields.get("version", int),
            parent=fields.get("parent", int, optional=True),
            created_at=fields.checked("created_at", str, _time_text),
            producer=fields.get("producer", str),
            schema=schema,
            value_format=value_format,
            record_count=fields.get("record_count", int),
            state_checksum=fields.get("state_checksum", str),
            snapshot_version=fields.get("snapshot_version", int),
            snapshot=refs["snapshot"],
            delta=refs["delta"],
            reverse=refs["reverse"],
            source_uri=source.get("uri", str),
            positions={stream: dict(parts) for stream, parts in positions.items()},
            changes={k: v for k, v in fields.get("changes", dict).items() if isinstance(v, int)},
            schema_change=bool(fields.get("schema_change", bool, optional=True)),
            tags=fields.checked("tags", dict, check_tags) if fields.obj.get("tags") is not None else {},
            shard=_shard_of(fields.nested("shard", optional=True)),
            format_version=fields.get("format_version", int),
        )
        manifest._check(path)
        return manifest

    def check_blob(self, found: pa.Schema, rows: int, ref: BlobRef, *, path: str) -> None:
        """Refuse a blob this manifest references unless it holds what the manifest says.

        Its data columns must be the manifest's schema exactly (names, order,
        combe types), its reserved columns those of its kind (``__combe_op``
        for deltas, the key index or nothing for snapshots), and its rows the
        count the reference records. The sha256 proves the blob is the one the
        manifest named; this proves the manifest describes it, so a manifest
        whose schema or counts were edited is an IntegrityError naming the
        version, never nulls served under a renamed column or a pyarrow error.
        """
        kinds = [name for name, mine in (("snapshot", self.snapshot), ("delta", self.delta),
                                         ("reverse", self.reverse)) if mine == ref]
        if not kinds:
            raise FormatError(f"{ref.path} is not a blob of version {self.version}", path=path)
        where = f"{path} ({kinds[0]} of version {self.version})"
        columns = [column for column in found if not column.name.startswith(RESERVED_PREFIX)]
        expected = [(self.schema.key_field, self.schema.key_stored), *self.schema.columns.items()]
        for position, (column, (name, kind)) in enumerate(zip(columns, expected)):
            try:
                actual = type_of_field(column)
            except FormatError as exc:
                raise IntegrityError(f"{where}: {exc}", path=path) from exc
            if (column.name, actual) != (name, kind):
                raise IntegrityError(
                    f"{where}: column {position + 1} is {column.name!r} ({actual}) in the blob but {name!r} ({kind}) "
                    f"in the manifest; the manifest does not describe its blob (edited or corrupted?)", path=path)
        if len(columns) != len(expected):
            raise IntegrityError(f"{where}: the blob has {len(columns)} columns, the manifest's schema "
                                 f"{len(expected)}; the manifest does not describe its blob", path=path)
        reserved = {column.name: column.type for column in found if column.name.startswith(RESERVED_PREFIX)}
        allowed = [{OP_COLUMN: pa.int8()}] if kinds[0] != "snapshot" else [
            {}, {INDEX_ROWS: pa.int32(), INDEX_ENDS: pa.int32()}]
        if reserved not in allowed:
            raise IntegrityError(f"{where}: reserved columns {sorted(reserved)} of the wrong kind or type", path=path)
        if rows != ref.rows:
            raise IntegrityError(f"{where}: the blob has {rows} rows, the manifest records {ref.rows}", path=path)

    def _check(self, path: str) -> None:
        """Cross-field rules: what a reader relies on to plan a load."""
        problems = []
        if self.version < 1:
            problems.append("version must be 1 or more")
        if self.parent is not None and not 1 <= self.parent < self.version:
            problems.append("parent must be an earlier version")
        if not 1 <= self.snapshot_version <= self.version:
            problems.append("snapshot_version must be at or before version")
        if (self.snapshot is not None) != (self.snapshot_version == self.version):
            problems.append("a snapshot blob is present exactly when snapshot_version == version")
        if self.parent is not None and self.delta is None and self.snapshot is None:
            problems.append("a version with a parent needs a delta or a snapshot")
        if self.record_count < 0:
            problems.append("record_count must not be negative")
        if not is_checksum(self.state_checksum) or (
                self.state_checksum.startswith(LEGACY_PREFIX) != (self.format_version == 1)):
            problems.append("state_checksum must be sha256:<64 hex> in format_version 1 and h128:<32 hex> after")
        if self.format_version == 1 and any("<" in t for t in [self.schema.key_type, *self.schema.columns.values()]):
            problems.append("format_version 1 has no nested types")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            problems.append("shard.index must be from 0 to shard.count - 1")
        if problems:
            raise FormatError(f"{path}: " + "; ".join(problems), path=path)


def _shard_of(fields: _Fields | None) -> tuple[int, int] | None:
    """A manifest's optional ``shard`` field as (index, count)."""
    return None if fields is None else (fields.get("index", int), fields.get("count", int))


@dataclass(frozen=True)
class Pointer:
    """``announced.json``: the version readers should use, and the store-wide pin if one is set.

    The pin lives in the same object so that a consumer's poll stays one
    conditional request; producers carry it over when they announce. A
    sharded dataset's announcement also says how many shards it has
    (``shard_count``), and is written in format 2 so that a reader that does
    not know sharded datasets refuses it. A shard's head (``shards/<i>/head.json``)
    is an unsharded pointer.

    ``lease_epoch`` is the epoch of the lease its producer held (producer/lease.py),
    absent when producers run without one: a producer that holds an older
    epoch never replaces it.
    """

    dataset: str
    version: int
    at: str
    by: str
    pin: int | None = None
    shard_count: int | None = None
    lease_epoch: int | None = None

    def to_json(self, sign: Sign | None = None) -> bytes:
        document: dict[str, Any] = {"format_version": POINTER_FORMAT if self.shard_count is None else
                                    SHARDED_POINTER_FORMAT, "dataset": self.dataset, "version": self.version,
                                    "at": self.at, "by": self.by, "pin": self.pin}
        if self.shard_count is not None:
            document["shard_count"] = self.shard_count
        if self.lease_epoch is not None:
            document["lease_epoch"] = self.lease_epoch
        return _dump(document, sign)

    @property
    def serving(self) -> int:
        """The version consumers without a pin of their own should serve."""
        return self.pin if self.pin is not None else self.version

    def check_pin(self, version: int) -> None:
        """Refuse to serve ``version`` unless it is or was announced: a manifest past the announced version was
        written by a producer that never announced it (stopped, or refused later), and no reader may see it."""
        if not 1 <= version <= self.version:
            raise ConfigError(f"{self.dataset} version {version} cannot be served: versions run from 1 to the "
                              f"announced version {self.version}, and only announced versions are served")

    @classmethod
    def from_json(cls, data: bytes, path: str, verify: Verify | None = None) -> Pointer:
        fields = _parse(data, path, READABLE_POINTERS, verify=verify)
        sharded = fields.get("format_version", int) == SHARDED_POINTER_FORMAT
        pointer = cls(fields.checked("dataset", str, check_dataset_name), fields.get("version", int),
                      fields.checked("at", str, _time_text), fields.get("by", str),
                      fields.get("pin", int, optional=True),
                      fields.get("shard_count", int) if sharded else None,
                      fields.get("lease_epoch", int, optional=True))
        if pointer.lease_epoch is not None and pointer.lease_epoch < 1:
            raise FormatError(f"{path}: lease_epoch must be 1 or more", path=path)
        if pointer.version < 1 or (pointer.pin is not None and not 1 <= pointer.pin <= pointer.version):
            raise FormatError(f"{path}: version must be 1 or more and pin between 1 and version", path=path)
        if pointer.shard_count is not None and pointer.shard_count < 1:
            raise FormatError(f"{path}: shard_count must be 1 or more", path=path)
        return pointer
