"""The documents of a sharded dataset: how it is sharded (``shards.json``) and its versions (sharded manifests).

A sharded dataset keeps one ordinary chain of versions per shard, under
``shards/<i>/``. A version of the dataset is a **sharded manifest**: for
every shard, the shard version that is part of it. It is written create-only
and announced by compare-and-swap of ``announced.json``, like an unsharded
version, so a reader that follows the announcement only ever sees shard
versions that were committed together. ``shards.json`` is written
create-only when the dataset is created and fixes the shard count and the
key for good. Every field is checked on read (docs/FORMAT.md, "Sharded
datasets").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from .checksum import format_checksum, parse_checksum
from .errors import ConfigError, FormatError
from .layout import READABLE_SHARDED_MANIFESTS, READABLE_SHARDINGS, SHARDED_MANIFEST_FORMAT, SHARDING_FORMAT, \
    check_dataset_name
from .manifest import Manifest, Sign, Verify, _dump, _Fields, _parse, _time_text, check_tags
from .partition import MAX_SHARDS
from .keys import KEY_TYPES
from .schema import VALUE_FORMATS, Schema

PARTITIONER = "murmur2"


@dataclass(frozen=True)
class Sharding:
    """``shards.json``: the shard count and key of a sharded dataset, fixed when it was created."""

    dataset: str
    shard_count: int
    key_field: str
    key_type: str
    created_at: str
    producer: str

    def to_json(self, sign: Sign | None = None) -> bytes:
        return _dump({"format_version": SHARDING_FORMAT, "dataset": self.dataset, "shard_count": self.shard_count,
                      "partitioner": PARTITIONER, "key": {"field": self.key_field, "type": self.key_type},
                      "created_at": self.created_at, "producer": self.producer}, sign)

    @classmethod
    def from_json(cls, data: bytes, path: str, verify: Verify | None = None) -> Sharding:
        fields = _parse(data, path, READABLE_SHARDINGS, verify=verify)
        key = fields.nested("key")
        assert key is not None
        partitioner = fields.get("partitioner", str)
        if partitioner != PARTITIONER:
            raise FormatError(f"{path}: partitioner {partitioner!r} is not {PARTITIONER!r}; this combe shards keys "
                              f"by {PARTITIONER} only", path=path)
        sharding = cls(fields.checked("dataset", str, check_dataset_name), fields.get("shard_count", int),
                       key.get("field", str), key.get("type", str), fields.checked("created_at", str, _time_text),
                       fields.get("producer", str))
        if not 1 <= sharding.shard_count <= MAX_SHARDS or sharding.key_type not in KEY_TYPES:
            raise FormatError(f"{path}: shard_count must be from 1 to {MAX_SHARDS} and key.type one of {KEY_TYPES}",
                              path=path)
        return sharding

    def check(self, shard: int) -> int:
        """``shard`` if this dataset has it; ConfigError otherwise."""
        if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < self.shard_count:
            raise ConfigError(f"dataset {self.dataset!r} has shards 0 to {self.shard_count - 1}; there is no shard "
                              f"{shard!r}")
        return shard


@dataclass(frozen=True)
class ShardVersion:
    """One shard's part of a dataset version: the shard version, its record count and state checksum."""

    version: int
    record_count: int
    state_checksum: str


@dataclass(frozen=True)
class ShardedManifest:
    """``versions/<v>.json`` of a sharded dataset: the shard versions that together are version v.

    ``schema`` is every shard version's columns together (a column some
    shards lack reads as null there); ``record_count`` and ``state_checksum``
    are the sums of the shards'.
    """

    dataset: str
    version: int
    parent: int | None
    created_at: str
    producer: str
    schema: Schema
    value_format: str
    record_count: int
    state_checksum: str
    shards: tuple[ShardVersion, ...]
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def shard_count(self) -> int:
        return len(self.shards)

    @property
    def shard_versions(self) -> list[int]:
        return [shard.version for shard in self.shards]

    def to_json(self, sign: Sign | None = None) -> bytes:
        return _dump({
            "format_version": SHARDED_MANIFEST_FORMAT,
            "dataset": self.dataset,
            "version": self.version,
            "parent": self.parent,
            "created_at": self.created_at,
            "producer": self.producer,
            "shard_count": self.shard_count,
            "key": {"field": self.schema.key_field, "type": self.schema.key_type},
            "schema": self.schema.to_json(),
            "value_format": self.value_format,
            "record_count": self.record_count,
            "state_checksum": self.state_checksum,
            "shards": [{"version": s.version, "record_count": s.record_count, "state_checksum": s.state_checksum}
                       for s in self.shards],
            "tags": dict(sorted(self.tags.items())),
        }, sign)

    @classmethod
    def from_json(cls, data: bytes, path: str, verify: Verify | None = None) -> ShardedManifest:
        fields = _parse(data, path, READABLE_SHARDED_MANIFESTS, verify=verify)
        key = fields.nested("key")
        assert key is not None
        key_type = key.get("type", str)
        if key_type not in KEY_TYPES:
            raise FormatError(f"{path}: key.type {key_type!r} is not one of {KEY_TYPES}", path=path)
        key_field = key.get("field", str)
        schema = fields.checked("schema", list, lambda columns: Schema.from_json(key_field, key_type, columns))
        value_format = fields.get("value_format", str)
        if value_format not in VALUE_FORMATS:
            raise FormatError(f"{path}: value_format {value_format!r} is not one of {VALUE_FORMATS}", path=path)
        shards = tuple(_shard_version(_Fields(entry, path, f"shards[{i}]"))
                       for i, entry in enumerate(fields.get("shards", list)))
        manifest = cls(
            dataset=fields.checked("dataset", str, check_dataset_name),
            version=fields.get("version", int),
            parent=fields.get("parent", int, optional=True),
            created_at=fields.checked("created_at", str, _time_text),
            producer=fields.get("producer", str),
            schema=schema,
            value_format=value_format,
            record_count=fields.get("record_count", int),
            state_checksum=fields.checked("state_checksum", str, lambda text: format_checksum(parse_checksum(text))),
            shards=shards,
            tags=fields.checked("tags", dict, check_tags) if fields.obj.get("tags") is not None else {},
        )
        problems = []
        if manifest.version < 1 or (manifest.parent is not None and not 1 <= manifest.parent < manifest.version):
            problems.append("version must be 1 or more and parent an earlier version")
        if fields.get("shard_count", int) != len(shards) or not 1 <= len(shards) <= MAX_SHARDS:
            problems.append(f"shard_count must be the number of entries of shards, from 1 to {MAX_SHARDS}")
        if manifest.record_count != sum(s.record_count for s in shards):
            problems.append("record_count must be the sum of the shards' record counts")
        if shards and manifest.state_checksum != state_checksum([s.state_checksum for s in shards]):
            problems.append("state_checksum must be the sum of the shards' state checksums")
        if problems:
            raise FormatError(f"{path}: " + "; ".join(problems), path=path)
        return manifest

    def check_shard(self, shard: int, manifest: Manifest, path: str) -> Manifest:
        """``manifest``, read as shard ``shard``'s part of this version, if it is that; FormatError otherwise.

        A reader checks each shard manifest it loads against the sharded
        manifest that named it: the right dataset, shard and version, the
        record count the sharded manifest recorded, a key and value format it
        agrees with, and columns its schema holds with a type it can read.
        """
        wanted = self.shards[shard]
        problems = []
        if manifest.shard != (shard, self.shard_count):
            problems.append(f"it is shard {manifest.shard} rather than ({shard}, {self.shard_count})")
        if (manifest.version, manifest.record_count, manifest.state_checksum) != \
                (wanted.version, wanted.record_count, wanted.state_checksum):
            problems.append(f"it is version {manifest.version} with {manifest.record_count} records and state "
                            f"checksum {manifest.state_checksum} rather than version {wanted.version} with "
                            f"{wanted.record_count} and {wanted.state_checksum}")
        if (manifest.schema.key_field, manifest.schema.key_type) != (self.schema.key_field, self.schema.key_type) \
                or manifest.value_format != self.value_format:
            problems.append("its key or value format differs from the dataset's")
        for name, kind in manifest.schema.columns.items():
            if readable_as(kind, self.schema.columns.get(name)) is None:
                problems.append(f"its column {name!r} ({kind}) is not one of the dataset's columns of that type")
        if problems:
            raise FormatError(f"{path} is not shard {shard} of {self.dataset} version {self.version}: "
                              + "; ".join(problems), path=path)
        return manifest


def _shard_version(fields: _Fields) -> ShardVersion:
    shard = ShardVersion(fields.get("version", int), fields.get("record_count", int),
                         fields.checked("state_checksum", str, lambda text: format_checksum(parse_checksum(text))))
    if shard.version < 1 or shard.record_count < 0:
        raise FormatError(f"{fields.path}: {fields.where} needs a version of 1 or more and a record_count of 0 or "
                          "more", path=fields.path)
    return shard


def readable_as(kind: str, wanted: str | None) -> str | None:
    """``wanted`` if a shard's column of type ``kind`` can be read as a dataset column of type ``wanted``.

    The same type, or a column that has held only nulls so far (``null``, or
    a list, struct or map whose parts are ``null``) under a type it would
    become: readers read those as null.
    """
    if wanted is None:
        return None
    return wanted if kind == wanted or _nulls_only(kind) else None


def _nulls_only(kind: str) -> bool:
    return kind == "null" or (kind.startswith("list<") and _nulls_only(kind[5:-1]))


def merged_schema(schemas: list[Schema], start: Schema | None = None) -> Schema:
    """The columns of every schema together: ``start``'s first, then each new one in the order met.

    A column that several schemas hold must have one type, except that a
    column holding only nulls yields to a typed one; otherwise ConfigError
    names the column and both types. The key must be the same everywhere.
    """
    first = start or schemas[0]
    merged = Schema(first.key_field, first.key_type, dict(first.columns))
    for schema in schemas:
        if (schema.key_field, schema.key_type) != (merged.key_field, merged.key_type):
            raise ConfigError(f"the shards' keys differ: {schema.key_field} ({schema.key_type}) and "
                              f"{merged.key_field} ({merged.key_type})")
        for name, kind in schema.columns.items():
            have = merged.columns.get(name)
            if have is None or have == kind or _nulls_only(kind):
                merged.columns.setdefault(name, kind)
            elif _nulls_only(have):
                merged.columns[name] = kind
            else:
                raise ConfigError(f"column {name!r} is {have} in one shard and {kind} in another")
    return merged


def state_checksum(checksums: list[str]) -> str:
    """The state checksum of the whole dataset: the shards' checksums summed (they are sums of row hashes)."""
    return format_checksum(sum(parse_checksum(c) for c in checksums))

