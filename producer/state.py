"""The producer's state between cycles: a base (the last snapshot) and an overlay of the rows changed since.

A cycle needs the previous rows of the keys it changes, never the whole
state, so the state is kept as the consumer keeps a View: the base table
sorted by key with its key index (format/index.py), and an overlay table of
the rows changed since the base, sorted by key, each marked present or
removed. A lookup probes the overlay (small) and then the base through its
index; applying a delta rebuilds the overlay only. A whole table is built
only when a snapshot is written (``table``).

Loading from the store verifies what it builds on against the manifests'
state checksums (``load_state``): the snapshot in full, each delta by
``advance`` from the rows it replaces, so a tampered manifest or blob is an
IntegrityError and never the base of a new version.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from combe.format.cache import BlobCache
from combe.format.checksum import EMPTY_CHECKSUM, advance, checksum_of, row_digests, state_checksum
from combe.format.cores import CORES, LEAST_ROWS, each
from combe.format.dataset import Dataset
from combe.format.delta import OP_COLUMN, REMOVED, apply_delta
from combe.format.errors import FormatError, IntegrityError
from combe.format.index import build_index, find_rows, one_array, split_index
from combe.format.keyorder import key_order
from combe.format.manifest import BlobRef, Manifest
from combe.format.schema import Schema, conform

log = logging.getLogger(__name__)

PRESENT = "__combe_present"


def take_columns(table: pa.Table, indices: np.ndarray | pa.Array) -> pa.Table:
    """``table.take(indices)``, column by column."""
    return take_owned(list(table.columns), table.schema, indices)


def take_owned(columns: list[pa.ChunkedArray | None], schema: pa.Schema, indices: np.ndarray | pa.Array) -> pa.Table:
    """The rows ``indices`` of the table ``columns`` (a list the caller hands over: each entry is let go as soon
    as it is taken), so a whole-table reorder needs the table plus a column a core, not two tables.

    Columns are taken on every core at once (a gather in no order waits on memory more than it computes),
    a column of many chunks joined first: Arrow's take over chunks looks up each index's chunk."""
    if isinstance(indices, np.ndarray):
        indices = pa.array(indices)
    taken: list[pa.Array | None] = [None] * len(columns)

    def take(position: int) -> None:
        column, columns[position] = columns[position], None
        assert column is not None
        taken[position] = one_array(column).take(indices)

    step = CORES if len(indices) >= LEAST_ROWS else 1
    for start in range(0, len(columns), step):
        each(take, range(start, min(start + step, len(columns))))
    return pa.Table.from_arrays(taken, schema=schema)


@dataclass
class State:
    """One version's rows: ``base`` (sorted by key) with its key index, and ``overlay`` (sorted by key, with
    PRESENT saying whether each key is in the state) laid over it. ``checksum`` and ``count`` are the
    version's; ``schema`` its schema (the base may be in an older one, with fewer columns)."""

    schema: Schema
    base: pa.Table
    checksum: str
    count: int
    overlay: pa.Table | None = None
    rows: np.ndarray | None = None
    ends: np.ndarray | None = None
    version: int | None = None
    # The blobs (sha256) the state is built from, snapshot first: what a blob cache must keep for it.
    blobs: tuple[str, ...] = ()

    @classmethod
    def empty(cls, schema: Schema) -> State:
        return cls(schema, schema.empty_table(), EMPTY_CHECKSUM, 0)

    @classmethod
    def of_table(cls, table: pa.Table, schema: Schema, checksum: str, *, version: int | None = None,
                 rows: np.ndarray | None = None, ends: np.ndarray | None = None, blobs: tuple[str, ...] = ()) -> State:
        """A state that is one sorted table (a snapshot), with its key index if known."""
        return cls(schema, table, checksum, table.num_rows, None, rows, ends, version, blobs)

    # -- lookups ---------------------------------------------------------------------------------

    def index(self) -> tuple[np.ndarray, np.ndarray]:
        """The base's key index, built on first use when the base did not come with one."""
        if self.rows is None or self.ends is None:
            rows, ends = build_index(self.base.column(self.schema.key_field).combine_chunks(), self.schema.key_stored)
            self.rows, self.ends = rows.to_numpy(), ends.to_numpy()
        return self.rows, self.ends

    def _base_rows(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Row of each key in the base, -1 where it has none."""
        if self.base.num_rows == 0:
            return np.full(len(keys), -1, np.int64)
        rows, ends = self.index()
        return find_rows(keys, self.schema.key_stored, self.base.column(self.schema.key_field), rows, ends)

    def _overlay_rows(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Row of each key in the overlay, -1 where it has none (a hash of the overlay's keys: it is small)."""
        if self.overlay is None or self.overlay.num_rows == 0:
            return np.full(len(keys), -1, np.int64)
        found = pc.index_in(keys, value_set=self.overlay.column(self.schema.key_field).combine_chunks())
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    def lookup(self, keys: pa.Array | pa.ChunkedArray, schema: Schema) -> tuple[np.ndarray, pa.Table]:
        """Whether each key is in the state, and its row in ``schema`` (a null row where it is not)."""
        in_overlay = self._overlay_rows(keys)
        in_base = self._base_rows(keys)
        from_overlay = in_overlay >= 0
        present = np.where(from_overlay, False, in_base >= 0)
        parts = [conform(take_columns(self.base, in_base[present]), schema)]
        if from_overlay.any():
            assert self.overlay is not None
            overlay_present = self.overlay.column(PRESENT).to_numpy(zero_copy_only=False)
            taken = in_overlay[from_overlay]
            live = overlay_present[taken]
            parts.append(conform(take_columns(self.overlay.drop_columns([PRESENT]), taken[live]), schema))
            present[np.flatnonzero(from_overlay)[live]] = True
        combined = pa.concat_tables(parts)
        # Each present key's row in ``combined``: base rows first, then overlay rows, each in key order.
        where = np.full(len(keys), -1, np.int64)
        base_hits = np.flatnonzero(present & ~from_overlay)
        where[base_hits] = np.arange(len(base_hits))
        overlay_hits = np.flatnonzero(present & from_overlay)
        where[overlay_hits] = len(base_hits) + np.arange(len(overlay_hits))
        indices = pa.array(where, mask=where < 0)
        return present, combined.take(indices)

    # -- changes ---------------------------------------------------------------------------------

    def applied(self, delta: pa.Table, schema: Schema, checksum: str) -> State:
        """This state with ``delta`` (a checked delta in ``schema``) laid over it; the base is shared."""
        ops = delta.column(OP_COLUMN)
        incoming = delta.drop_columns([OP_COLUMN]).append_column(
            pa.field(PRESENT, pa.bool_(), nullable=False), pc.not_equal(ops, REMOVED))
        removed = int(pc.sum(pc.equal(ops, REMOVED)).as_py() or 0)
        added = int(pc.sum(pc.equal(ops, 1)).as_py() or 0)
        if self.overlay is None or self.overlay.num_rows == 0:
            overlay = incoming
        else:
            target = incoming.schema
            before = conform(self.overlay.drop_columns([PRESENT]), schema).append_column(
                target.field(PRESENT), self.overlay.column(PRESENT))
            merged = pa.concat_tables([before, incoming])
            order = key_order(merged.column(schema.key_field))
            keys = merged.column(schema.key_field).take(order)
            last = np.ones(len(order), np.bool_)
            if len(order) > 1:
                last[:-1] = pc.not_equal(keys.slice(0, len(order) - 1), keys.slice(1)).to_numpy(
                    zero_copy_only=False)
            overlay = take_columns(merged, order[last])
        return State(schema, self.base, checksum, self.count + added - removed, overlay.combine_chunks(),
                     self.rows, self.ends, None)

    def table(self) -> pa.Table:
        """The whole state as one table sorted by key, in the state's schema."""
        base = conform(self.base, self.schema)
        if self.overlay is None or self.overlay.num_rows == 0:
            return base.combine_chunks()
        key = self.schema.key_field
        replaced = self._base_rows(self.overlay.column(key))
        kept = np.ones(base.num_rows, np.bool_)
        kept[replaced[replaced >= 0]] = False
        live = self.overlay.filter(self.overlay.column(PRESENT)).drop_columns([PRESENT])
        merged = pa.concat_tables([take_columns(base, np.flatnonzero(kept)), conform(live, self.schema)])
        del base
        return take_columns(merged, key_order(merged.column(key))).combine_chunks()

    def keys(self) -> pa.ChunkedArray:
        """Every key in the state, in no particular order."""
        key = self.schema.key_field
        if self.overlay is None or self.overlay.num_rows == 0:
            return self.base.column(key)
        replaced = self._base_rows(self.overlay.column(key))
        kept = np.ones(self.base.num_rows, np.bool_)
        kept[replaced[replaced >= 0]] = False
        live = self.overlay.filter(self.overlay.column(PRESENT)).column(key)
        return pa.chunked_array([*self.base.column(key).filter(pa.array(kept)).chunks, *live.chunks],
                                self.base.schema.field(key).type)


# -- loading from the store ---------------------------------------------------------------------------


def read_table(dataset: Dataset, ref: BlobRef, owner: Manifest) -> pa.Table:
    """A blob's data columns (the index columns of a snapshot left out), checked against ``owner``."""
    return split_index(dataset.blob_table(ref, owner))[0]


def _chain(dataset: Dataset, manifest: Manifest) -> list[Manifest]:
    """The manifests from ``manifest``'s snapshot version up to it, oldest first."""
    chain = [manifest]
    while chain[-1].version != manifest.snapshot_version:
        parent = chain[-1].parent
        if parent is None:
            raise FormatError(f"{dataset.url}: version {chain[-1].version} has no parent but is not a snapshot")
        chain.append(dataset.manifest(parent))
    return chain[::-1]


def _mismatch(dataset: Dataset, manifest: Manifest, found: str) -> IntegrityError:
    return IntegrityError(f"{dataset.url}: the state built for version {manifest.version} has checksum {found}, "
                          f"but its manifest records {manifest.state_checksum}; the manifest or a blob was "
                          "changed after it was published. Nothing is built on it.")


def load_state(dataset: Dataset, manifest: Manifest, cache: BlobCache | None = None) -> State:
    """The state at ``manifest``'s version, verified: its snapshot in full, each delta incrementally.

    With a ``cache`` the blobs are mapped from its files (fetched into it
    first if missing), and a snapshot whose cached file this producer vouched
    for (its rows sum to the manifest's checksum: format/cache.py) is not
    hashed again: the cache's hash of the whole file, checked on every open,
    proves it holds that blob.
    """
    def table_of(ref: BlobRef, owner: Manifest) -> pa.Table:
        return cache.table(ref, owner) if cache is not None else dataset.blob_table(ref, owner)

    chain = _chain(dataset, manifest)
    base = chain[0]
    assert base.snapshot is not None
    log.info("loading %s version %d: snapshot %d + %d deltas", dataset.name, manifest.version, base.version,
             len(chain) - 1)
    table, rows, ends = split_index(table_of(base.snapshot, base))
    table = conform(table, base.schema)
    if any(step.format_version == 1 for step in chain):
        return _load_legacy(dataset, chain, table)
    vouched = cache is not None and cache.vouched(base.snapshot) == base.state_checksum
    found = base.state_checksum if vouched else state_checksum(table)
    if found != base.state_checksum or table.num_rows != base.record_count:
        raise _mismatch(dataset, base, found)
    if cache is not None and not vouched:
        cache.vouch(base.snapshot, found)
    state = State.of_table(table, base.schema, found, version=base.version, rows=rows, ends=ends,
                           blobs=(base.snapshot.sha256,))
    for step in chain[1:]:
        assert step.delta is not None
        blobs = (*state.blobs, step.delta.sha256)
        state = verified_step(state, split_index(table_of(step.delta, step))[0], step,
                              what=f"{dataset.url}/{step.delta.path}")
        state.blobs = blobs
    return state


def verified_step(state: State, delta: pa.Table, manifest: Manifest, *, what: str) -> State:
    """``state`` with a delta read from the store, once it fits the state and reaches the manifest's checksum."""
    schema = manifest.schema
    delta = conform(delta, schema).append_column(delta.schema.field(OP_COLUMN), delta.column(OP_COLUMN)) \
        if OP_COLUMN in delta.column_names else delta
    ops = delta.column(OP_COLUMN).to_numpy(zero_copy_only=False)
    present, old = state.lookup(delta.column(schema.key_field), schema)
    if not np.array_equal(present, ops != 1):
        raise IntegrityError(f"{what} does not fit the state it applies to: it adds keys that exist or "
                             "updates/removes keys that do not")
    upserts = ops != REMOVED
    checksum = advance(state.checksum, row_digests(old)[present],
                       row_digests(delta.drop_columns([OP_COLUMN]))[upserts])
    nxt = state.applied(delta, schema, checksum)
    if checksum != manifest.state_checksum or nxt.count != manifest.record_count:
        raise IntegrityError(f"{what}: applied to version {manifest.parent} it gives checksum {checksum} and "
                             f"{nxt.count} records, but version {manifest.version}'s manifest records "
                             f"{manifest.state_checksum} and {manifest.record_count}; the manifest or a blob "
                             "was changed after it was published. Nothing is built on it.")
    nxt.version = manifest.version
    return nxt


def _load_legacy(dataset: Dataset, chain: Iterable[Manifest], table: pa.Table) -> State:
    """A chain with format version 1 manifests (sha256 checksums over the whole sorted table): each version
    is built whole and checked in full, as format version 1 allows nothing else."""
    state = None
    for step in chain:
        if step.snapshot is None:
            assert step.delta is not None
            table = apply_delta(table, read_table(dataset, step.delta, step), step.schema,
                                what=f"delta {step.delta.path}")
        found = checksum_of(table, step.state_checksum)
        if found != step.state_checksum or table.num_rows != step.record_count:
            raise _mismatch(dataset, step, found)
        state = step
    assert state is not None
    return State.of_table(table, state.schema, state_checksum(table), version=state.version)
