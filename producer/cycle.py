"""One publish cycle: read changes, fold, write blobs, check, validate, write manifest, announce.

A failure at any step leaves the announced version untouched: blobs have
names no one else uses, the manifest is create-only, and only the final
compare-and-swap makes a version visible. Blobs of a cycle that failed are
garbage for retention to collect.

A cycle costs what it changes: records are decoded in bulk
(producer/decode.py), the previous rows of the changed keys are found through
the state's key index (producer/state.py), the new checksum is advanced from
them, and the integrity check decodes the delta blobs and checks the same
sums. Only a version that gets a snapshot builds (and checks) a whole state.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from combe.format.cache import BlobCache, Incoming
from combe.format.checksum import advance, row_digests, state_checksum
from combe.format.codec import check_blob, decompress, encode_table, read_ipc, sha256_hex
from combe.format.dataset import Announced, Dataset
from combe.format.delta import ADDED, OP_COLUMN, REMOVED, UPDATED
from combe.format.errors import BadRecordError, ConfigError, ConflictError, FormatError, IntegrityError
from combe.format.index import split_index, with_index
from combe.format.keys import check_shardable
from combe.format.layout import delta_blob, new_uid, reverse_blob, snapshot_blob
from combe.format.manifest import BlobRef, Manifest, Pointer, check_tags, parse_time, utc_now
from combe.format.schema import Schema, conform, declared_over
from combe.format.settings import setting

from .decode import Decode, Places, value_lines
from .evolution import retype_state
from .fold import DELETED, Changes, FoldResult, fold
from .held import Ahead, Held, joined
from .lease import ProducerLease, announce_epoch
from .records import Decoder, RecordFormat
from .recovery import recover_announcement
from .sources.base import Lines, Messages, Positions, Records, Rows, Source
from .state import State, load_state
from .validators import Limits, ValidationContext, Validator, run_validators
from .whole import check_whole_state_options, remove_missing

log = logging.getLogger(__name__)

ON_BAD_RECORD = ("fail", "skip")
# Latest records of a Kafka read are decoded this many at a time (a bad one sends only its piece record by record).
LATEST_PIECE = 200_000


def _numbered(stream: str, first: int, count: int) -> Places:
    """The places of ``count`` records numbered from ``first`` (rows, changes given from Python)."""
    return Places(stream, np.zeros(count, np.int64), first + np.arange(count, dtype=np.int64))


def default_producer_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_uid()[:8]}"


@dataclass
class PublishOptions:
    """How a producer publishes; the CLI's publish flags map onto these one to one (the settings are its table).

    ``limits`` are the built-in validators, on by default; ``validators`` are
    custom ones, run after them. ``allow_schema_change`` lets a column change
    type, published as a snapshot-only version (producer/evolution.py).
    ``tags`` are stored in the manifest of every version this publishes
    (format/manifest.py ``check_tags`` has the rules). ``schema`` declares
    the columns instead of inferring them (``Schema.declared``: the first
    field is the key column, and sets ``fmt``'s key field and type): a record
    with a field it lacks, or a value its column's type does not hold, is a
    bad record.
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
    # A local directory of the producer's own where it keeps the blobs its state is built from (format/cache.py),
    # so a run that starts without a state in memory (``--once``) maps it instead of loading it from the store.
    cache_dir: str | Path | None = None
    schema: pa.Schema | None = None
    declared: Schema | None = field(init=False, default=None, repr=False)  # ``schema``, read

    def __post_init__(self) -> None:
        self.tags = check_tags(self.tags)
        if self.schema is not None:
            self.declared = declared = Schema.declared(self.schema)
            if self.fmt.value_format != "json" or self.allow_schema_change:
                raise ConfigError("a declared schema is for value_format json, without allow_schema_change "
                                  "(declare the new type instead)")
            defaults = RecordFormat()
            for name in ("key_field", "key_type"):
                if getattr(self.fmt, name) not in (getattr(defaults, name), getattr(declared, name)):
                    raise ConfigError(f"{name}={getattr(self.fmt, name)!r}, but the declared schema's key column "
                                      f"is {declared.key_field!r} ({declared.key_type})")
            self.fmt = replace(self.fmt, key_field=declared.key_field, key_type=declared.key_type)
        if self.on_bad_record not in ON_BAD_RECORD:
            raise ConfigError(f"on_bad_record={self.on_bad_record!r}: use fail or skip")
        if self.snapshot_every < 1:
            raise ConfigError(f"snapshot_every={self.snapshot_every}: write a snapshot every 1 version or more")
        if self.snapshot_ratio <= 0:
            raise ConfigError(f"snapshot_ratio={self.snapshot_ratio}: use a share above 0")


@dataclass
class CycleResult:
    """What one cycle did, for the CLI's summary and the metrics."""

    outcome: str  # "published", "noop", or "adopted" (announced a version written earlier: see recovered)
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
    recovered: int | None = None  # announced.json was missing: this version was announced again first


@dataclass
class _Copy:
    """A blob's IPC file being copied into the cache as it is encoded; kept once its version is announced."""

    incoming: Incoming
    rows: int
    schema: pa.Schema


@dataclass
class _Base:
    """The announced version a cycle builds on."""

    announced: Announced
    manifest: Manifest | None
    state: State
    schema: Schema


class Publisher:
    """Publishes one source into one dataset, cycle by cycle, keeping the state between cycles.

    With a ``lease`` (producer/lease.py), every announcement is checked against it just before its
    compare-and-swap: a producer that no longer holds the lease announces nothing.
    """

    def __init__(self, dataset: Dataset, source: Source, options: PublishOptions | None = None,
                 on_progress: Callable[[int], None] | None = None, lease: ProducerLease | None = None) -> None:
        dataset.store.check_publishable()  # before any work: a read-only protocol refuses the first write
        self.dataset = dataset
        self.source = source
        self.options = options or PublishOptions()
        if dataset.shard_of is not None:
            check_shardable(dataset.name, self.options.fmt.key_type)
        if source.whole_state:
            check_whole_state_options(self.options.fmt, self.options.on_bad_record)
        self.lease = lease
        self.decoder = Decoder(self.options.fmt, no_key_hint=source.no_key_hint)
        self.on_progress = on_progress
        # The state of the version this producer announced last, kept for its next cycle.
        self._cached: State | None = None
        # Bound 0: after each cycle only the blobs of the announced state stay (kept for this Publisher).
        self.cache = BlobCache(dataset, Path(self.options.cache_dir), max_bytes=0) \
            if self.options.cache_dir is not None else None
        # False decodes every record on the per-record path (the reference the bulk path is tested against).
        self.bulk = True
        # False decodes a latest-only source's messages only once its read has ended (producer/held.py: the
        # reference decoding ahead is tested against).
        self.ahead = True

    # -- loading -----------------------------------------------------------------

    def _base(self) -> _Base:
        announced = self.dataset.announced()
        declared = self.options.declared
        if announced.pointer is None:
            fmt = self.options.fmt
            raw = {"value": "string" if fmt.value_format == "string" else "binary"}
            schema = declared.copy() if declared is not None else Schema(
                fmt.key_field, fmt.key_type, raw if fmt.value_format != "json" else {})
            return _Base(announced, None, State.empty(schema), schema)
        manifest = self.dataset.manifest(announced.pointer.version)
        self._check_format(manifest)
        if self._cached is not None and self._cached.version == manifest.version:
            state = self._cached
        else:
            self._cached = None
            state = load_state(self.dataset, manifest, self.cache)
        schema = manifest.schema.copy() if declared is None else declared_over(manifest.schema, declared)
        return _Base(announced, manifest, state, schema)

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
        recovered = recover_announcement(self.dataset, self.options.producer_id) \
            if self.dataset.announced().pointer is None else None
        if recovered is not None:
            self._cached = recovered.state
        result = self._cycle()
        if recovered is None:
            return result
        # Announcing the recovered version is what this run did, even when nothing new followed it.
        return replace(result, recovered=recovered.version,
                       outcome="adopted" if result.outcome == "noop" else result.outcome)

    def _cycle(self) -> CycleResult:
        started = time.monotonic()
        announced = self.dataset.announced()
        if announced.pointer is not None and announced.pointer.shard_count is not None:
            raise ConfigError(f"dataset {self.dataset.name!r} is sharded {announced.pointer.shard_count} ways: "
                              f"publish its shards, with shard_count={announced.pointer.shard_count}")
        adopted = self._adopt_stopped_version(announced)
        if adopted:
            return adopted
        base = self._base()
        positions: Positions = {s: dict(p) for s, p in (base.manifest.positions if base.manifest else {}).items()}
        rebuild = base.manifest is not None and self.source.rebuild_needed(
            positions, parse_time(base.manifest.created_at))
        if rebuild or self.source.whole_state:
            positions = {}
        changes = Changes(base.schema.copy(), dict(base.schema.columns) if base.manifest else {},
                          allow_type_change=self.options.allow_schema_change,
                          declared=self.options.declared is not None)
        messages, bad = self._collect(changes, positions)
        if self.source.whole_state:
            remove_missing(changes, base.state, self.source.uri)
        if rebuild:
            # The whole source was read again: a key it no longer holds was deleted by a record this producer
            # never saw (cleaned away or expired), so the difference against the announced state removes it.
            # Tombstones for every key come first: a key the source still holds has a later record.
            keys = base.state.keys()
            changes.parts.insert(0, pa.table({base.schema.key_field: keys,
                                              DELETED: pa.array(np.ones(len(keys), np.bool_))}))
        schema_change = bool(changes.retyped)
        if schema_change:
            table = retype_state(base.state.table(), changes.retyped, changes.schema)
            base.state = State.of_table(table, changes.schema, state_checksum(table))
        result = fold(base.state, changes)
        # A shard's first version is published even when empty: a dataset version needs every shard.
        first_shard = base.manifest is None and self.dataset.shard_of is not None
        if not result.changed and not schema_change and not first_shard:
            log.info("%s: %d messages, no change; nothing to publish", self.dataset.name, messages)
            return CycleResult("noop", base.announced.version, messages, bad, seconds=time.monotonic() - started,
                               rebuilt=rebuild)
        copies: dict[str, _Copy] = {}
        try:
            manifest, written = self._write_version(base, result, positions, messages, bad, schema_change, copies)
            self._announce(manifest, base.announced)
        except BaseException as exc:
            for copy in copies.values():  # a version not announced leaves nothing in the cache
                copy.incoming.discard()
            if isinstance(exc, ConflictError):
                # Another producer's version is announced now: the state kept from this producer's last
                # version is stale, so drop it; the next cycle loads the winner's state and its positions.
                self._cached = None
            raise
        result.next_state.version = manifest.version
        self._keep_copies(manifest, copies, base.state, result.next_state)
        self._cached = result.next_state
        self.source.commit(positions)
        log.info("%s: published version %d (+%d ~%d -%d)", self.dataset.name, manifest.version,
                 result.added, result.updated, result.removed)
        return CycleResult("published", manifest.version, messages, bad, result.added, result.updated,
                           result.removed, written, manifest.snapshot is not None, time.monotonic() - started,
                           manifest.schema_change, rebuild)

    def _collect(self, changes: Changes, positions: Positions) -> tuple[int, int]:
        """Read every record the source has after ``positions``, decode it into ``changes``, advance the
        positions. Returns (messages, bad); messages counts every record read, whatever was decoded.

        Sources that say ``latest_only`` (compacted Kafka topics) have only the
        latest record per raw key decoded, at the end of the read: the fold keeps
        only the latest value per key anyway, so a record superseded in the same
        cycle is never decoded, just as if the log cleaner had removed it (or it
        is, ahead of the read's end on a worker thread, when what it brings can
        be taken out again: producer/held.py). Other
        sources (files, written by people) have every record decoded, chunk by
        chunk, so every bad line is reported. Either way, with ``on_bad_record``
        fail the error names the first bad record in source order.
        """
        decode = Decode(self.decoder, changes, self.source, bulk=self.bulk, shard=self.dataset.shard_of)
        messages = bad = 0
        held: list[Held] = []
        ahead = Ahead(lambda: Decode(self.decoder, changes.twin(), self.source, bulk=self.bulk,
                                     shard=self.dataset.shard_of)) if self.source.latest_only and self.ahead else None
        try:
            messages, bad = self._read(decode, ahead, held, positions)
            decoded = ahead.result(held) if ahead is not None else None
        finally:
            if ahead is not None:
                ahead.close()
        if decoded is not None:
            changes.adopt(decoded)  # decoded ahead, and what superseded messages brought changes nothing
            return messages, bad
        for stream in dict.fromkeys(part.stream for part in held):
            bad += self._decode_latest(decode, [part for part in held if part.stream == stream])
        return messages, bad

    def _read(self, decode: Decode, ahead: Ahead | None, held: list[Held], positions: Positions) -> tuple[int, int]:
        """The read of ``_collect``: decodes what it does not hold, holds what it does; (messages, bad)."""
        messages = bad = 0
        json_values = self.options.fmt.value_format == "json"
        for chunk in self.source.read(positions):
            if isinstance(chunk, Lines):
                count, errors = decode.lines(chunk.stream, chunk.data, chunk.first_line, self.source.delimiter,
                                             rows=self.source.whole_state)
                bad += self._skip_or_raise(errors)
                # Per chunk, not per record: a chunk that raised is never published, so no position is lost.
                # A whole state is read from its start every time: it has none.
                if not self.source.whole_state:
                    positions.setdefault(chunk.stream, {})["0"] = chunk.position
            elif isinstance(chunk, Rows):
                count = len(chunk.rows)
                bad += self._skip_or_raise(decode.rows(chunk.rows, _numbered(chunk.stream, chunk.first_row, count)))
            elif isinstance(chunk, Records):
                count = len(chunk.keys)
                places = _numbered(chunk.stream, chunk.first, count)
                bad += self._skip_or_raise(decode.records(chunk.keys, chunk.values, places))
            else:
                assert isinstance(chunk, Messages)
                count = chunk.advanced
                if len(chunk.keys):
                    keys = pa.array(chunk.keys, pa.binary())
                    if self.source.latest_only:
                        if json_values:
                            lines, deleted, clean = value_lines(chunk.values)
                            part = Held(chunk.stream, keys, lines, deleted, np.full(len(keys), clean),
                                        chunk.partitions, chunk.offsets)
                        else:
                            part = Held(chunk.stream, keys, pa.array(chunk.values, pa.binary()), None,
                                        np.ones(len(keys), np.bool_), chunk.partitions, chunk.offsets)
                        held.append(part)
                        if ahead is not None:
                            ahead.add(part, chunk.keys)
                    else:
                        places = Places(chunk.stream, chunk.partitions, chunk.offsets)
                        bad += self._skip_or_raise(decode.pairs(keys, pa.array(chunk.values, pa.binary()), places))
                positions.setdefault(chunk.stream, {}).update(chunk.positions)
            messages += count
            if self.on_progress:
                self.on_progress(messages)
        return messages, bad

    def _decode_latest(self, decode: Decode, held: list[Held]) -> int:
        """Decode the latest message of each raw key of one stream, in the order of those messages."""
        every = joined(held)
        del held
        places = Places(every.stream, every.partitions, every.offsets)
        keyless = every.keys.is_null().to_numpy(zero_copy_only=False)
        # A keyless message supersedes nothing: each one is bad on its own.
        errors = [decode.bad(places, int(i), self.decoder.no_key) for i in np.flatnonzero(keyless).tolist()]
        codes = pc.dictionary_encode(every.keys).indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        _, from_end = np.unique(codes[::-1], return_index=True)
        latest = np.sort(len(codes) - 1 - from_end)
        latest = latest[~keyless[latest]]
        for start in range(0, len(latest), LATEST_PIECE):
            errors += every.take(latest[start:start + LATEST_PIECE]).decode(decode)
        return self._skip_or_raise(errors)

    def _skip_or_raise(self, errors: list[BadRecordError]) -> int:
        """Apply ``on_bad_record``: raise the earliest error, or log them all and count them."""
        if errors and self.options.on_bad_record != "skip":
            raise min(errors, key=lambda error: (error.stream, error.partition, error.offset))
        for error in errors:
            log.warning("skipped %s", error)
        return len(errors)

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

    def _copy(self, name: str, table: pa.Table, copies: dict[str, _Copy]) -> Incoming | None:
        """Where the IPC file of blob ``name`` goes as it is encoded, if there is a cache (``copies`` holds it)."""
        if self.cache is None:
            return None
        copies[name] = _Copy(self.cache.incoming(), table.num_rows, table.schema)
        return copies[name].incoming

    def _keep_copies(self, manifest: Manifest, copies: dict[str, _Copy], previous: State, state: State) -> None:
        """Put the announced version's snapshot or delta in the cache, and drop what its state no longer needs.

        The snapshot's record vouches for its checksum: this producer computed
        it from the very rows it wrote (format/cache.py, ``vouch``).
        """
        if manifest.snapshot is not None:
            state.blobs = (manifest.snapshot.sha256,)
        elif manifest.delta is not None:
            state.blobs = (*previous.blobs, manifest.delta.sha256)
        if self.cache is None:
            return
        for name, copy in copies.items():
            ref = manifest.snapshot if name == "snapshot" else manifest.delta
            if ref is not None:
                self.cache.adopt(copy.incoming, ref, copy.rows, copy.schema,
                                 state_checksum=manifest.state_checksum if name == "snapshot" else None)
        self.cache.keep(self, state.blobs)
        self.cache.evict()

    def _write_version(self, base: _Base, result: FoldResult, positions: Positions, messages: int, bad: int,
                       schema_change: bool, copies: dict[str, _Copy]) -> tuple[Manifest, int]:
        """Write the blobs, check and validate them, then the manifest; ``copies`` gets the cache files of the
        snapshot and the delta as they are encoded.

        A schema change gets a snapshot and no deltas: a delta's rows are in one
        schema, and cannot be applied over a snapshot in another.
        """
        version = (base.announced.version or 0) + 1
        uid = self.options.new_uid()
        schema = result.schema
        if schema_change:
            table = result.next_state.table()
            result.next_state = State.of_table(table, schema, state_checksum(table))
            del table
        checksum = result.checksum
        blobs: dict[str, tuple[str, bytes | bytearray, int]] = {}
        if base.manifest is not None and not schema_change:
            blobs["delta"] = (delta_blob(version, uid), encode_table(result.delta, copy=self._copy(
                "delta", result.delta, copies)), result.delta.num_rows)
            blobs["reverse"] = (reverse_blob(version, uid), encode_table(result.reverse), result.reverse.num_rows)
            if self.options.integrity_check:
                self._check_deltas(base, result, blobs)
        if schema_change or self._needs_snapshot(base, version, len(blobs["delta"][1]) if blobs else 0):
            path = snapshot_blob(version, uid)
            blobs["snapshot"] = (path, *self._snapshot(result, path, copies))
        refs: dict[str, BlobRef] = {}
        with ThreadPoolExecutor(1, thread_name_prefix="combe-check") as pool:
            # The snapshot is decompressed and checked while the blobs are written and hashed: a blob no
            # manifest references is garbage if the check fails, as every blob of a failed cycle is.
            checked = pool.submit(check_blob, blobs["snapshot"][1], path=blobs["snapshot"][0]) \
                if "snapshot" in blobs and self.options.integrity_check else None
            for name in list(blobs):
                path, data, rows = blobs.pop(name)  # each blob let go once written: validators run without them
                self.dataset.write_blob(path, data)
                refs[name] = BlobRef(path, len(data), sha256_hex(data), rows)
                del data
            if checked is not None:
                checked.result()
        self._validate(base, result, version)
        manifest = Manifest(
            dataset=self.dataset.name, version=version, parent=base.announced.version,
            created_at=self.options.clock(), producer=self.options.producer_id, schema=schema,
            value_format=self.options.fmt.value_format, record_count=result.record_count,
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
        return manifest, sum(ref.bytes for ref in refs.values()) + len(manifest.to_json())

    def _snapshot(self, result: FoldResult, path: str, copies: dict[str, _Copy]) -> tuple[bytearray, int]:
        """The snapshot blob of the new state and its rows; the state becomes that one table.

        The only place a cycle builds a whole table. A state that is one table
        already (a first version, a schema change) is the table whose row
        digests made its checksum; a merged one (the base and the overlay of
        the deltas since) has its digests summed again and compared with the
        checksum the deltas advanced to, which checks the merge. The blob is
        then decompressed without being kept (``check_blob``, while
        ``_write_version`` writes it): zstd's content checksums prove it holds
        the very bytes Arrow's IPC writer made of the checked table. So no
        table is decoded again, and a first version's rows are hashed once.
        """
        schema, state = result.schema, result.next_state
        checksum, count = state.checksum, state.count
        merged = state.overlay is not None
        table = state.table()
        if self.options.integrity_check and merged and (
                table.num_rows != count or state_checksum(table) != checksum):
            raise IntegrityError(f"{self.dataset.name}: the state built for the snapshot does not hold the "
                                 "folded state (its rows or checksum differ)")
        known = (state.rows, state.ends) if not merged and state.rows is not None and state.ends is not None \
            else None
        del state
        indexed = with_index(table, schema.key_field, schema.key_stored, known)
        data = encode_table(indexed, copy=self._copy("snapshot", indexed, copies))
        _, rows, ends = split_index(indexed)
        del indexed
        result.next_state = State.of_table(table, schema, checksum, rows=rows, ends=ends)
        return data, count

    def _check_deltas(self, base: _Base, result: FoldResult,
                      blobs: dict[str, tuple[str, bytes | bytearray, int]]) -> None:
        """Decode the delta and reverse delta about to be referenced and check, from the rows they touch alone,
        that they lead from the previous state to the new one and back (``advance`` of format/checksum.py),
        and that they fit: added keys absent before, updated and removed ones present (found by the key index)."""
        def table(name: str) -> pa.Table:
            path, data, _ = blobs[name]
            return read_ipc(decompress(data, path=path), path=path)

        schema, previous, checksum = result.schema, base.state, result.checksum
        delta, reverse = table("delta"), table("reverse")
        key = schema.key_field
        ops = delta.column(OP_COLUMN).to_numpy(zero_copy_only=False)
        present, old = previous.lookup(delta.column(key), schema)
        upserted = ops != REMOVED
        new_digests = row_digests(conform(delta, schema))
        if not np.array_equal(present, ops != ADDED) or advance(
                previous.checksum, row_digests(old)[present], new_digests[upserted]) != checksum:
            raise IntegrityError(f"{self.dataset.name}: previous state + delta != new state")
        back = reverse.column(OP_COLUMN).to_numpy(zero_copy_only=False)
        mirrored = np.select([ops == ADDED, ops == REMOVED], [REMOVED, ADDED], UPDATED).astype(np.int8)
        if not (reverse.column(key).equals(delta.column(key)) and np.array_equal(back, mirrored)) or advance(
                checksum, new_digests[upserted], row_digests(conform(reverse, schema))[back != REMOVED]
        ) != previous.checksum:
            raise IntegrityError(f"{self.dataset.name}: new state + reverse delta != previous state")

    def _validate(self, base: _Base, result: FoldResult, version: int) -> None:
        previous = base.state.count if base.manifest is not None else None
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
            return Pointer(self.dataset.name, manifest.version, self.options.clock(), self.options.producer_id, pin,
                           lease_epoch=announce_epoch(self.lease, now.pointer))

        self.dataset.update_announced(change, current=announced, doing=f"announcing version {manifest.version}")
