"""A dataset written version by version with the format layer alone: no producer, any schema, nested types.

Each ``publish`` takes the changes of one version (key -> record, or None to
remove) and the schema of that version, and writes what a producer would:
a snapshot (version 1, a schema change, or when asked), else a delta and a
reverse delta, a create-only manifest, then the announcement. The records as
given are kept per version (``states``), the truth readers are checked
against.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from combe.format.checksum import state_checksum
from combe.format.codec import encode_table, sha256_hex
from combe.format.dataset import Dataset
from combe.format.delta import ADDED, REMOVED, UPDATED, make_delta
from combe.format.index import with_index
from combe.format.layout import delta_blob, new_uid, reverse_blob, snapshot_blob
from combe.format.manifest import BlobRef, Manifest, Pointer, utc_now
from combe.format.schema import Schema
from combe.format.types import kind, list_item, map_types, struct_fields

Record = dict[str, Any]


def shaped(value: Any, type_: str) -> Any:
    """A value written in an older type as the spec says it reads in ``type_``: struct fields it lacks are None.

    The test's own reading of docs/FORMAT.md ("Schema evolution"), independent of the code under test.
    """
    if value is None or type_ == "null":
        return None
    if kind(type_) == "struct":
        return {name: shaped(value.get(name), t) for name, t in struct_fields(type_)}
    if kind(type_) == "list":
        return [shaped(item, list_item(type_)) for item in value]
    if kind(type_) == "map":
        return {k: shaped(v, map_types(type_)[1]) for k, v in value.items()}
    return value


def schema_of(key_type: str = "string", **columns: str) -> Schema:
    return Schema("key", key_type, dict(columns))


class Written:
    def __init__(self, store: str, name: str = "nested") -> None:
        self.dataset = Dataset.open(store, name)
        self.states: dict[int, dict[Any, Record]] = {0: {}}
        self.schemas: dict[int, Schema] = {}
        self.version = 0

    def _table(self, records: list[Record], schema: Schema) -> pa.Table:
        return pa.Table.from_pylist(records, schema=schema.to_arrow())

    def publish(self, changes: dict[Any, Record | None], schema: Schema, *, snapshot: bool = False,
                schema_change: bool = False) -> int:
        version = self.version + 1
        before = self.states[self.version]
        after = dict(before)
        for key, record in changes.items():
            if record is None:
                after.pop(key, None)
            else:
                after[key] = {"key": key, **record}
        state = self._table([after[k] for k in sorted(after)], schema)
        uid = new_uid()
        blobs: dict[str, tuple[str, bytes, int]] = {}
        if version > 1 and not schema_change:
            # Removing a key that is not there changes nothing: a delta names only keys it changes (FORMAT.md:
            # a removed key must be present), as a producer writes it.
            keys = sorted(k for k, record in changes.items() if record is not None or k in before)
            ops = [REMOVED if changes[k] is None else UPDATED if k in before else ADDED for k in keys]
            undo = [ADDED if changes[k] is None else UPDATED if k in before else REMOVED for k in keys]
            delta = make_delta(self._table([after.get(k, {"key": k}) for k in keys], schema), ops, schema)
            reverse = make_delta(self._table([before.get(k, {"key": k}) for k in keys], schema), undo, schema)
            blobs["delta"] = (delta_blob(version, uid), encode_table(delta), delta.num_rows)
            blobs["reverse"] = (reverse_blob(version, uid), encode_table(reverse), reverse.num_rows)
        if version == 1 or snapshot or schema_change:
            indexed = with_index(state, schema.key_field, schema.key_type)
            blobs["snapshot"] = (snapshot_blob(version, uid), encode_table(indexed), state.num_rows)
        for path, data, _ in blobs.values():
            self.dataset.write_blob(path, data)
        refs = {name: BlobRef(path, len(data), sha256_hex(data), rows) for name, (path, data, rows) in blobs.items()}
        previous = self.dataset.manifest(self.version) if self.version else None
        manifest = Manifest(
            dataset=self.dataset.name, version=version, parent=self.version or None, created_at=utc_now(),
            producer="tests", schema=schema, value_format="json", record_count=state.num_rows,
            state_checksum=state_checksum(state),
            snapshot_version=version if "snapshot" in refs else previous.snapshot_version,  # type: ignore[union-attr]
            snapshot=refs.get("snapshot"), delta=refs.get("delta"), reverse=refs.get("reverse"),
            source_uri="tests://written", positions={}, schema_change=schema_change)
        assert self.dataset.create_manifest(manifest)
        announced = self.dataset.announced()
        pointer = Pointer(self.dataset.name, version, utc_now(), "tests")
        assert self.dataset.announce(pointer, announced.tag) is not None
        self.version = version
        self.states[version] = after
        self.schemas[version] = schema
        return version

    def record(self, version: int, key: Any, schema_version: int | None = None) -> Record | None:
        """The record of ``key`` at ``version`` as written, read in the schema of ``schema_version`` (default:
        ``version``'s), absent columns None."""
        record = self.states[version].get(key)
        if record is None:
            return None
        schema = self.schemas[schema_version or version]
        return {"key": key, **{n: shaped(record.get(n), t) for n, t in schema.columns.items()}}
