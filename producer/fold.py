"""The fold: a cycle's records, as Arrow parts, against the previous state -> delta, reverse delta, counts.

Pure: no store, no source. ``Changes`` collects the decoded records of one
cycle in arrival order (producer/decode.py makes the parts) and grows the
schema by the rules of producer/shapes.py. ``fold`` keeps the latest record
per key (a stable sort by key: later records win), finds each key's previous
row through the state's key index, compares the two by row digest (the
state checksum's, format/checksum.py), and builds the delta and reverse
delta in key order. It touches the changed keys' rows only: the new checksum
follows from the old one by ``advance``, and the new state is the old one
with the delta laid over it (producer/state.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from combe.format.checksum import advance, row_digests
from combe.format.delta import ADDED, OP_COLUMN, REMOVED, UPDATED
from combe.format.errors import SourceError
from combe.format.index import one_array
from combe.format.keyorder import key_order
from combe.format.schema import RESERVED_PREFIX, Schema
from combe.format.types import arrow_field, type_of_field

from .evolution import convert_column

from .shapes import Conflict, at, unify, value_type
from .state import State, take_columns, take_owned

# A part's column saying the record is a tombstone (its value columns are null).
DELETED = "__combe_deleted"


class Changes:
    """The records of one cycle, in arrival order, and the schema they need.

    ``published`` maps the columns of the announced version to their types:
    those are fixed (but for nulls and new struct fields), while a column first
    seen in this cycle may still widen (int64 -> float64).
    """

    def __init__(self, schema: Schema, published: dict[str, str], *, allow_type_change: bool = False,
                 declared: bool = False) -> None:
        self.schema = schema
        # A declared schema is never grown: a field it lacks, or a value its column's type does not hold,
        # is a bad record.
        self.declared = declared
        self.published = published
        # allow_schema_change: a published column whose type a value conflicts with takes the value's
        # type; name -> its type before. Its values are converted by producer.evolution before the fold.
        self.allow_type_change = allow_type_change
        self.retyped: dict[str, str] = {}
        self.parts: list[pa.Table] = []
        self.rows = 0
        # Where the first records with an empty key came from (validators name them).
        self.empty_keys: list[str] = []
        # A whole state's source: each key may come once (producer/whole.py); ``latest`` refuses a repeat.
        self.once: str | None = None

    def twin(self) -> Changes:
        """Changes of no records, over the same schema and settings: a decoding that may be dropped
        (producer/held.py) goes there, and ``adopt`` takes it over if it is kept."""
        assert not self.parts and not self.retyped, "a twin starts from no records"
        twin = Changes(self.schema.copy(), dict(self.published), allow_type_change=self.allow_type_change,
                       declared=self.declared)
        twin.once = self.once
        return twin

    def adopt(self, twin: Changes) -> None:
        """The records, schema and findings of ``twin`` in place of this one's (which holds none yet)."""
        assert not self.parts, "adopting over records"
        self.schema, self.retyped, self.parts, self.rows = twin.schema, twin.retyped, twin.parts, twin.rows
        self.empty_keys = twin.empty_keys

    # -- schema ----------------------------------------------------------------------------------

    def holds(self, types: dict[str, str]) -> bool:
        """Whether values of column types ``types`` would leave the schema as it is (no column added, grown or
        retyped, no conflict)."""
        columns, retyped = dict(self.schema.columns), dict(self.retyped)
        try:
            self._grow_into(columns, retyped, types)
        except ValueError:
            return False
        return columns == self.schema.columns and retyped == self.retyped

    def _grow_into(self, columns: dict[str, str], retyped: dict[str, str], types: dict[str, str]) -> None:
        """Grow ``columns`` (and ``retyped``) in place by a record's or a part's value types; ValueError
        naming the conflict. Callers pass copies, so a refused record leaves the schema as it was."""
        for name, got in types.items():
            if name.startswith(RESERVED_PREFIX):
                raise ValueError(f"field {name!r} uses the reserved prefix {RESERVED_PREFIX}")
            have = columns.get(name)
            if self.declared:
                _check_declared(name, have, got)
                continue
            if have is None:
                columns[name] = got
                continue
            if name in retyped:
                continue  # changing type in this cycle: every value is converted to the new type (evolution)
            published = self.published.get(name)
            try:
                columns[name] = unify(have, got, published)
            except Conflict as exc:
                if self.allow_type_change and published is not None:
                    retyped[name], columns[name] = published, got
                    continue
                raise ValueError(f"type conflict: field {name!r}{at(exc.path)} is {exc.have} in the dataset but "
                                 f"this value is {exc.got}; allow_schema_change publishes the new type as a "
                                 "snapshot-only version") from None

    def check_row(self, row: dict[str, object], columns: dict[str, str], retyped: dict[str, str]) -> None:
        """Grow ``columns`` and ``retyped`` by one decoded row; ValueError if the row does not fit (then they
        may be half grown: pass copies)."""
        types = {}
        for name, value in row.items():
            if columns.get(name) == "json":
                continue  # a json column (format version 1 datasets) holds any JSON value, as its text
            try:
                types[name] = value_type(value)
            except ValueError as exc:
                raise ValueError(f"field {name!r}: {exc}") from None
        self._grow_into(columns, retyped, types)

    def grow(self, types: dict[str, str]) -> None:
        """Take a part's column types into the schema; ValueError (nothing changed) on a conflict."""
        columns, retyped = dict(self.schema.columns), dict(self.retyped)
        self._grow_into(columns, retyped, types)
        self.commit(columns, retyped)

    def commit(self, columns: dict[str, str], retyped: dict[str, str]) -> None:
        self.schema.columns.clear()
        self.schema.columns.update(columns)
        self.retyped = retyped

    # -- records ---------------------------------------------------------------------------------

    def add(self, part: pa.Table) -> None:
        """A part: the key column, value columns (any subset, types the schema has grown to take), DELETED.

        Kept as one chunk per column: Arrow's JSON reader gives a chunk per block of about 1 MiB, and a take
        over many chunks (``latest``) costs several times one over a single array.
        """
        if part.num_rows:
            self.parts.append(part.combine_chunks())
            self.rows += part.num_rows

    def latest(self, *, drop_deleted: bool = False) -> tuple[pa.Table, int]:
        """One row per key, the latest, sorted by key: key, every value column, DELETED; and how many keys'
        latest records were tombstones left out (``drop_deleted``: a first version has nothing they remove,
        and leaving them out here spares a second take of every column).

        Parts hold records in arrival order and the sort is stable, so the last
        row of each run of equal keys is the latest record of that key.
        """
        target = pa.schema([*self.schema.to_arrow(), pa.field(DELETED, pa.bool_(), nullable=False)])
        parts, self.parts = self.parts, []
        if not parts:
            return target.empty_table(), 0
        columns: dict[str, list[pa.Array]] = {f.name: [] for f in target}
        for part in parts:
            for f in target:
                columns[f.name].extend(conform_column(part, f, self.retyped).chunks)
        del parts
        owned: list[pa.ChunkedArray | None] = [pa.chunked_array(columns.pop(f.name), f.type) for f in target]
        keys = owned[0]
        assert keys is not None
        keys = one_array(keys)
        order = key_order(keys)
        sorted_keys = keys.take(order)
        del keys
        if len(order) > 1:
            last = np.ones(len(order), np.bool_)
            last[:-1] = pc.not_equal(sorted_keys.slice(0, len(order) - 1),
                                     sorted_keys.slice(1)).to_numpy(zero_copy_only=False)
            if self.once is not None and not last.all():
                twice = sorted_keys[int(np.flatnonzero(~last)[0])]
                times = pc.sum(pc.equal(sorted_keys, twice)).as_py()
                raise SourceError(f"{self.once}: key {twice.as_py()!r} appears {times} times; a whole state holds "
                                  "each key once. Nothing was published.", source=self.once)
            order = order[last]
        del sorted_keys
        dropped = 0
        if drop_deleted:
            deleted = owned[-1]
            assert deleted is not None
            gone = deleted.take(pa.array(order)).to_numpy()
            dropped = int(gone.sum())
            order = order[~gone] if dropped else order
        return take_owned(owned, target, order), dropped


def _check_declared(name: str, have: str | None, got: str) -> None:
    """A field of type ``got`` against its declared column (None: not declared); ValueError if it does not fit."""
    if have is None:
        raise ValueError(f"field {name!r} is not in the declared schema")
    if have == "json":
        return
    try:
        fits = unify(have, got, have) == have
    except Conflict as exc:
        raise ValueError(f"field {name!r}{at(exc.path)} is {exc.got}, which the declared {exc.have} does not "
                         "hold") from None
    if not fits:
        raise ValueError(f"field {name!r} is {got}, which the declared {have} does not hold (a field it lacks?)")


def conform_column(part: pa.Table, target: pa.Field, retyped: dict[str, str]) -> pa.ChunkedArray:
    """A part's column as ``target`` wants it: missing -> nulls; null, list<null>, narrower structs and int64
    under float64 widened (integers to the nearest float, as a JSON reader does); a column changing type
    (``retyped``) converted value by value (producer/evolution.py)."""
    if target.name not in part.column_names:
        return pa.chunked_array([pa.nulls(part.num_rows, target.type)], target.type)
    column = part.column(target.name)
    if column.type == target.type:
        return column
    if target.name in retyped:
        return convert_column(column, type_of_field(target))
    return column.cast(target.type, safe=False)


@dataclass
class FoldResult:
    """What a cycle changes. ``state`` builds the whole new state (it costs a pass over it): validators
    that need only counts and the delta should use ``record_count`` and ``delta``."""

    next_state: State
    delta: pa.Table
    # None when no changed key was in the state before (a first version): ``reverse`` then builds it.
    before: pa.Table | None
    schema: Schema
    added: int
    updated: int
    removed: int
    unchanged: int
    empty_keys: list[str] = field(default_factory=list)
    _reverse: pa.Table | None = field(default=None, repr=False)

    @property
    def changed(self) -> int:
        return self.added + self.updated + self.removed

    @property
    def record_count(self) -> int:
        return self.next_state.count

    @property
    def checksum(self) -> str:
        return self.next_state.checksum

    @property
    def state(self) -> pa.Table:
        return self.next_state.table()

    @property
    def reverse(self) -> pa.Table:
        """The reverse delta: each changed key's previous row (null where it was absent) and the opposite op.

        Built when asked (a first version is never written with one), unless set."""
        if self._reverse is not None:
            return self._reverse
        ops = self.delta.column(OP_COLUMN).to_numpy(zero_copy_only=False)
        back = np.select([ops == ADDED, ops == REMOVED], [REMOVED, ADDED], UPDATED).astype(np.int8)
        if self.before is not None:
            return _with_op(self.before, back)
        arrow = self.schema.to_arrow()
        keys = self.delta.column(self.schema.key_field)
        nulls = [pa.nulls(len(keys), f.type) for f in list(arrow)[1:]]
        return _with_op(pa.Table.from_arrays([keys, *nulls], schema=arrow), back)

    @reverse.setter
    def reverse(self, table: pa.Table) -> None:
        self._reverse = table


def _with_op(table: pa.Table, ops: np.ndarray) -> pa.Table:
    return table.append_column(pa.field(OP_COLUMN, pa.int8(), nullable=False), pa.array(ops, pa.int8()))


def fold(previous: State, changes: Changes) -> FoldResult:
    """The latest record of each key against its previous row: the new version's tables and counts."""
    schema = changes.schema
    first = previous.count == 0
    latest, dropped = changes.latest(drop_deleted=first)
    deleted = latest.column(DELETED).to_numpy()
    rows = latest.drop_columns([DELETED])
    del latest
    keys = rows.column(schema.key_field)
    kept = ~deleted
    new_digests = row_digests(rows)
    if first:
        # A first version (or an emptied dataset): every row is added (tombstones were left out: their keys
        # were not there), nothing to look up or compare.
        checksum = advance(previous.checksum, new_digests[:0], new_digests)
        del new_digests, keys
        delta = _with_op(rows, np.full(rows.num_rows, ADDED, np.int8))
        if not rows.num_rows:
            # No row, but maybe columns: a shard's empty first version holds those the other shards' records
            # brought, and its snapshot is written in them.
            next_state = replace(previous, schema=schema)
        elif previous.base.num_rows == 0 and previous.overlay is None:
            next_state = State.of_table(rows, schema, checksum)  # one table, shared with the delta
        else:
            next_state = previous.applied(delta, schema, checksum)
        return FoldResult(next_state, delta, None, schema, rows.num_rows, 0, 0, dropped,
                          empty_keys=list(changes.empty_keys))
    present, old = previous.lookup(keys, schema)
    old_digests = row_digests(old)
    same = present & kept & (new_digests == old_digests)
    added_mask = kept & ~present
    updated_mask = kept & present & ~same
    removed_mask = deleted & present
    ops = np.zeros(rows.num_rows, np.int8)
    ops[added_mask], ops[updated_mask], ops[removed_mask] = ADDED, UPDATED, REMOVED
    changed = np.flatnonzero(ops)
    checksum = advance(previous.checksum, old_digests[updated_mask | removed_mask],
                       new_digests[added_mask | updated_mask])
    counts = (int(added_mask.sum()), int(updated_mask.sum()), int(removed_mask.sum()))
    unchanged = rows.num_rows - len(changed)
    delta = _with_op(take_columns(rows, changed), ops[changed])
    before = take_columns(old.set_column(0, arrow_field(schema.key_field, schema.key_stored, nullable=False), keys),
                          changed)
    next_state = previous.applied(delta, schema, checksum) if len(changed) else previous
    return FoldResult(next_state, delta, before, schema, *counts, unchanged=unchanged,
                      empty_keys=list(changes.empty_keys))
