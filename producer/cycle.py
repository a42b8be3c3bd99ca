"""One publish cycle: read changes, fold, write blobs, check, validate, write manifest, announce.

A failure at any step leaves the announced version untouched: blobs have
names no one else uses, the manifest is create-only, and only the final
compare-and-swap makes a version visible. Blobs of a cycle that failed are
garbage for retention to collect.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from combe.format.checksum import state_checksum
from combe.format.codec import decompress, encode_table, read_ipc, sha256_hex
from combe.format.dataset import Announced, Dataset
from combe.format.delta import apply_delta
from combe.format.errors import BadRecordError, ConfigError, ConflictError, FormatError, IntegrityError
from combe.format.index import split_index, with_index
from combe.format.layout import delta_blob, new_uid, reverse_blob, snapshot_blob
from combe.format.manifest import BlobRef, Manifest, Pointer, check_tags, parse_time, utc_now
from combe.format.schema import Schema, conform
from combe.format.settings import setting

from .evolution import convert_changes, retype_state
from .fold import Changes, FoldResult, fold
from .records import Decoder, RecordFormat
from .sources.base import Positions, Record, Source
from .state import load_state
from .validators import Limits, ValidationContext, Validator, run_validators

log = logging.getLogger(__name__)

ON_BAD_RECORD = ("fail", "skip")


def default_producer_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_uid()[:8]}"


@dataclass
class PublishOptions:
    """How a producer publishes; the CLI's publish flags map onto these one to one (the settings are its table).

    ``limits`` are the built-in validators, on by default; ``validators`` are
    custom ones, run after them. ``allow_schema_change`` lets a column change
    type, published as a snapshot-only version (producer/evolution.py).
    ``tags`` are stored in the manifest of every version this publishes
    (format/manifest.py ``check_tags`` has the rules).
    """

    fmt: RecordFormat = field(default_factory=RecordFormat)
    on_bad_record: str = setting("fail", "fail: stop and announce nothing; skip: count it in the manifest "
                                         "(changes.bad_records) and the log", choices=ON_BAD_RECORD)
    snapshot_every: int = setting(20, "write a snapshot at least every N versions")
    snapshot_ratio: float = setting(0.5, "...or once the deltas since the last snapshot reach this share of its "
                                         "size")
    validators: list[Validator] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    integrity_check: bool = True
    allow_schema_change: bool = False
    producer_id: str = field(default_factory=default_producer_id)
    # Where blob names' uids and the documents' times come from. Fixed ones make a store the same bytes
    # each time it is written (the conformance corpus, docs/conformance); uids must stay unique per dataset.
    new_uid: Callable[[], str] = new_uid
    clock: Callable[[], str] = utc_now
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tags = check_tags(self.tags)
        if self.on_bad_record not in ON_BAD_RECORD:
            raise ConfigError(f"on_bad_record={self.on_bad_record!r}: use fail or skip")
        if self.snapshot_every < 1:
            raise ConfigError(f"snapshot_every={self.snapshot_every}: write a snapshot every 1 version or more")
        if self.snapshot_ratio <= 0:
            raise ConfigError(f"snapshot_ratio={self.snapshot_ratio}: use a share above 0")


@dataclass
class CycleResult:
    """What one cycle did, for the CLI's summary and the metrics."""

    outcome: str  # "published", "noop", or "adopted" (finished a stopped producer's version)
    version: int | None
    messages: int = 0
    bad_records: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    bytes_written: int = 0
    snapshot: bool = False
    seconds: float = 0.0
    schema_change: bool = False
    rebuilt: bool = False  # the source was read again from its start (Kafka --rebuild)


@dataclass
class _Base:
    """The announced version a cycle builds on."""

    announced: Announced
    manifest: Manifest | None
    state: pa.Table
    schema: Schema


class Publisher:
    """Publishes one source into one dataset, cycle by cycle, keeping the state between cycles."""

    def __init__(self, dataset: Dataset, source: Source, options: PublishOptions | None = None,
                 on_progress: Callable[[int], None] | None = None) -> None:
        dataset.store.check_publishable()  # before any work: a read-only protocol refuses the first write
        self.dataset = dataset
        self.source = source
        self.options = options or PublishOptions()
        self.decoder = Decoder(self.options.fmt, no_key_hint=source.no_key_hint)
        self.on_progress = on_progress
        self._cached: tuple[int, pa.Table] | None = None

    # -- loading -----------------------------------------------------------------

    def _base(self) -> _Base:
        announced = self.dataset.announced()
        if announced.pointer is None:
            fmt = self.options.fmt
            schema = Schema(fmt.key_field, fmt.key_type, {"value": "string" if fmt.value_format == "string"
                                                          else "binary"} if fmt.value_format != "json" else {})
            return _Base(announced, None, schema.empty_table(), schema)
        manifest = self.dataset.manifest(announced.pointer.version)
        self._check_format(manifest)
        if self._cached and self._cached[0] == manifest.version:
            state = self._cached[1]
        else:
            state = load_state(self.dataset, manifest)
        return _Base(announced, manifest, state, manifest.schema.copy())

    def _check_format(self, manifest: Manifest) -> None:
        fmt = self.options.fmt
        stored = (manifest.schema.key_field, manifest.schema.key_type, manifest.value_format)
        if stored != (fmt.key_field, fmt.key_type, fmt.value_format):
            raise ConfigError(
                f"dataset {self.dataset.name!r} was published with key_field={stored[0]} key_type={stored[1]} "
                f"value_format={stored[2]}; this run asks for key_field={fmt.key_field} key_type={fmt.key_type} "
                f"value_format={fmt.value_format}"
            )

    def _adopt_stopped_version(self, announced: Announced) -> CycleResult | None:
        """Announce a manifest a stopped producer wrote but never announced.

        That manifest passed every check before it was written, and its
        version number cannot be reused (manifests are create-only), so rolling
        it forward is the only way not to skip a version.
        """
        following = (announced.version or 0) + 1
        try:
            manifest = self.dataset.manifest(following)
        except LookupError:
            return None
        if manifest.parent != announced.version:
            raise FormatError(f"{self.dataset.url}: version {following} names parent {manifest.parent}, "
                              f"but version {announced.version} is announced")
        log.warning("%s: version %d was written by %s but never announced; announcing it now",
                    self.dataset.name, following, manifest.producer)
        self._announce(manifest, announced)
        self.source.commit(manifest.positions)
        return CycleResult("adopted", following)

    # -- the cycle ---------------------------------------------------------------

    def run_cycle(self) -> CycleResult:
        """Publish at most one version from the changes the source has now."""
        started = time.monotonic()
        announced = self.dataset.announced()
        adopted = self._adopt_stopped_version(announced)
        if adopted:
            return adopted
        base = self._base()
        positions: Positions = {s: dict(p) for s, p in (base.manifest.positions if base.manifest else {}).items()}
        rebuild = base.manifest is not None and self.source.rebuild_needed(
            positions, parse_time(base.manifest.created_at))
        if rebuild:
            positions = {}
        changes = Changes(base.schema, held=set(base.schema.columns) if base.manifest else set(),
                          allow_type_change=self.options.allow_schema_change)
        messages, bad = self._collect(changes, positions)
        if rebuild:
            # The whole source was read again: a key it no longer holds was deleted by a record this producer
            # never saw (cleaned away or expired), so the difference against the announced state removes it.
            for key in base.state.column(base.schema.key_field).to_pylist():
                changes.latest.setdefault(key, None)
        if changes.retyped:
            convert_changes(changes)
            base.state = retype_state(base.state, changes.retyped, changes.schema)
        result = fold(base.state, changes)
        # A shard's first version is published even when empty: a dataset version needs every shard.
        first_shard = base.manifest is None and self.dataset.shard_of is not None
        if not result.changed and not changes.retyped and not first_shard:
            log.info("%s: %d messages, no change; nothing to publish", self.dataset.name, messages)
            return CycleResult("noop", base.announced.version, messages, bad, seconds=time.monotonic() - started,
                               rebuilt=rebuild)
        try:
            manifest, written = self._write_version(base, result, positions, messages, bad, bool(changes.retyped))
            self._announce(manifest, base.announced)
        except ConflictError:
            # Another producer's version is announced now: the state kept from this producer's last
            # version is stale, so drop it; the next cycle loads the winner's state and its positions.
            self._cached = None
            raise
        self._cached = (manifest.version, result.state)
        self.source.commit(positions)
        log.info("%s: published version %d (+%d ~%d -%d)", self.dataset.name, manifest.version,
                 result.added, result.updated, result.removed)
        return CycleResult("published", manifest.version, messages, bad, result.added, result.updated,
                           result.removed, written, manifest.snapshot is not None, time.monotonic() - started,
                           manifest.schema_change, rebuild)

    def _collect(self, changes: Changes, positions: Positions) -> tuple[int, int]:
        """Read every record the source has after ``positions``; advance them. Returns (messages, bad).

        Sources that say ``latest_only`` (compacted Kafka topics) keep only the
        latest record per raw key while reading and decode those at the end: the
        fold keeps only the latest value per key anyway, so a record superseded in
        the same cycle is never decoded, just as if the log cleaner had removed
        it, and the per-message work is one dict update. Other sources (files,
        written by people) have every record decoded as it comes, so every bad
        line is reported. Either way, with ``--on-bad-record fail`` the error
        names the first bad record in source order.
        """
        messages = bad = 0
        one_by_one = not self.source.latest_only
        latest: dict[Any, tuple[str, Record]] = {}
        keyless: list[tuple[str, Record]] = []
        for batch in self.source.read(positions):
            stream = batch.stream
            if one_by_one:
                for record in batch.records:
                    bad += self._skip_or_raise([self._fold_record(changes, stream, record)])
            else:
                for record in batch.records:
                    key = record.key
                    if key is None:  # a keyless record supersedes nothing: each one is bad on its own
                        keyless.append((stream, record))
                        continue
                    # pop, then insert: the dict's order is the order of each key's last record, which is
                    # the order to fold in when two raw keys decode to one key ("7" and "07" as int64).
                    latest.pop(key, None)
                    latest[key] = (stream, record)
            # Per batch, not per record: a batch that raised is never published, so no position is lost.
            ends = batch.positions
            if ends is None:
                ends = {str(record.partition): record.next_offset for record in batch.records}
            positions.setdefault(stream, {}).update(ends)
            messages += len(batch.records)
            if self.on_progress:
                self.on_progress(messages)
        errors = [self._fold_record(changes, stream, record) for stream, record in [*latest.values(), *keyless]]
        return messages, bad + self._skip_or_raise(errors)

    def _fold_record(self, changes: Changes, stream: str, record: Record) -> BadRecordError | None:
        """Decode one record into ``changes``; the error, if it cannot be folded."""
        try:
            if self.source.jsonl:
                key, row = self.decoder.decode_jsonl(record.value)
            else:
                key, row = self.decoder.decode(record.key, record.value)
            changes.add(key, row)
            return None
        except ValueError as exc:
            return BadRecordError(str(exc), stream=stream, partition=record.partition, offset=record.offset,
                                  where=self.source.describe(stream, record.partition, record.offset))

    def _skip_or_raise(self, errors: list[BadRecordError | None]) -> int:
        """Apply ``on_bad_record``: raise the earliest error, or log them all and count them."""
        found = [error for error in errors if error is not None]
        if found and self.options.on_bad_record != "skip":
            raise min(found, key=lambda error: (error.stream, error.partition, error.offset))
        for error in found:
            log.warning("skipped %s", error)
        return len(found)

    def _needs_snapshot(self, base: _Base, version: int, delta_bytes: int) -> bool:
        if base.manifest is None:
            return True
        since = version - base.manifest.snapshot_version
        if since >= self.options.snapshot_every:
            return True
        chain, total = base.manifest, delta_bytes
        while chain.version != chain.snapshot_version and chain.delta is not None:
            total += chain.delta.bytes
            assert chain.parent is not None
            chain = self.dataset.manifest(chain.parent)
        assert chain.snapshot is not None
        return total >= self.options.snapshot_ratio * chain.snapshot.bytes

    def _write_version(self, base: _Base, result: FoldResult, positions: Positions,
                       messages: int, bad: int, schema_change: bool) -> tuple[Manifest, int]:
        """Write the blobs, check and validate them, then the manifest.

        A schema change gets a snapshot and no deltas: a delta's rows are in one
        schema, and cannot be applied over a snapshot in another.
        """
        version = (base.announced.version or 0) + 1
        uid = self.options.new_uid()
        schema = result.schema
        checksum = state_checksum(result.state)
        blobs: dict[str, tuple[str, bytes, int]] = {}
        if base.manifest is not None and not schema_change:
            blobs["delta"] = (delta_blob(version, uid), encode_table(result.delta), result.delta.num_rows)
            blobs["reverse"] = (reverse_blob(version, uid), encode_table(result.reverse), result.reverse.num_rows)
        if schema_change or self._needs_snapshot(base, version, len(blobs["delta"][1]) if blobs else 0):
            snapshot = with_index(result.state, schema.key_field, schema.key_type)
            blobs["snapshot"] = (snapshot_blob(version, uid), encode_table(snapshot), result.state.num_rows)
        for path, data, _ in blobs.values():
            self.dataset.write_blob(path, data)
        if self.options.integrity_check:
            self._check_integrity(base, result, checksum, blobs)
        self._validate(base, result, version)
        refs = {name: BlobRef(path, len(data), sha256_hex(data), rows) for name, (path, data, rows) in blobs.items()}
        manifest = Manifest(
            dataset=self.dataset.name, version=version, parent=base.announced.version,
            created_at=self.options.clock(), producer=self.options.producer_id, schema=schema,
            value_format=self.options.fmt.value_format, record_count=result.state.num_rows,
            state_checksum=checksum,
            snapshot_version=version if "snapshot" in refs else base.manifest.snapshot_version,  # type: ignore[union-attr]
            snapshot=refs.get("snapshot"), delta=refs.get("delta"), reverse=refs.get("reverse"),
            source_uri=self.source.uri, positions=positions,
            changes={"messages": messages, "added": result.added, "updated": result.updated,
                     "removed": result.removed, "unchanged": result.unchanged, "bad_records": bad},
            schema_change=schema_change, tags=self.options.tags, shard=self.dataset.shard_of,
        )
        if not self.dataset.create_manifest(manifest):
            raise ConflictError(f"{self.dataset.name}: version {version} was written by another producer first; "
                                "nothing was announced by this one", dataset=self.dataset.name, version=version)
        return manifest, sum(len(data) for _, data, _ in blobs.values()) + len(manifest.to_json())

    def _check_integrity(self, base: _Base, result: FoldResult, checksum: str,
                         blobs: dict[str, tuple[str, bytes, int]]) -> None:
        """Decode the bytes about to be referenced and check they reach exactly the states they claim."""
        def table(name: str) -> pa.Table:
            path, data, _ = blobs[name]
            return split_index(read_ipc(decompress(data, path=path), path=path))[0]

        schema = result.schema
        if "snapshot" in blobs and state_checksum(table("snapshot")) != checksum:
            raise IntegrityError(f"{self.dataset.name}: the encoded snapshot does not hold the folded state")
        if "delta" in blobs:
            if state_checksum(apply_delta(conform(base.state, schema), table("delta"), schema)) != checksum:
                raise IntegrityError(f"{self.dataset.name}: previous state + delta != new state")
            undone = apply_delta(result.state, table("reverse"), schema, what="reverse delta")
            if state_checksum(undone) != state_checksum(conform(base.state, schema)):
                raise IntegrityError(f"{self.dataset.name}: new state + reverse delta != previous state")

    def _validate(self, base: _Base, result: FoldResult, version: int) -> None:
        previous = base.state.num_rows if base.manifest is not None else None
        context = ValidationContext(self.dataset.name, version, previous, result)
        run_validators([*self.options.limits.validators(), *self.options.validators], context)

    def _announce(self, manifest: Manifest, announced: Announced) -> None:
        """Move the announcement from ``announced`` (the manifest's parent) to the manifest, by compare-and-swap.

        A swap lost to a pin change (``combe pin``: same version, new tag) is tried again on top of it.
        """
        def change(now: Announced) -> Pointer | None:
            # If another producer announced this very manifest (it adopted it, maybe publishing more on
            # top since), it is announced: versions only ever advance one by one.
            if (now.version or 0) >= manifest.version:
                return None
            if now.version != manifest.parent:
                raise ConflictError(f"{self.dataset.name}: another producer announced a version while this one "
                                    f"was publishing version {manifest.version}; nothing was announced by this one",
                                    dataset=self.dataset.name, version=manifest.version)
            pin = now.pointer.pin if now.pointer else None
            return Pointer(self.dataset.name, manifest.version, self.options.clock(), self.options.producer_id, pin)

        self.dataset.update_announced(change, current=announced, doing=f"announcing version {manifest.version}")
