"""Decoding a source's chunks into Arrow parts for the fold: in bulk, and record by record only to name bad ones.

The bulk path hands Arrow's C++ JSON reader a chunk's lines (a file block)
or a batch of message values joined into one buffer, with the schema held so
far as its explicit schema (new fields are inferred, then merged by the rules
of producer/shapes.py); keys and positions stay Arrow and numpy arrays. No
Python object is made per record.

Arrow's reader is more lenient than JSON, and reads some inputs another way
than a JSON parser does, so a chunk goes to the bulk path only after checks
that make both paths agree, and its result is checked again: every line
must start an object (a top-level ``null`` or a blank line would shift rows),
nest at most ``MAX_JSON_DEPTH`` levels (deeper input makes the reader slow
down quadratically), be UTF-8 (the reader does not check), give exactly one
row (``{...} {...}`` on one line gives two), hold no NaN or infinity (the
reader accepts them), no integer beyond 64 bits (the reader makes it a
float) and no timestamp-looking text (the reader makes it a timestamp: such a
field is read again as text). A value read as null is a tombstone only if the
record says ``"value": null``: those records are looked at one by one.

A chunk that fails any check, or the reader itself, is decoded record by
record (producer/records.py, the reference): that path names each bad
record exactly (file and line, or topic, partition and offset). The good
records of such a chunk then go through the bulk path again.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from combe.format.errors import BadRecordError, FormatError
from combe.format.index import one_array
from combe.format.jsontext import MAX_JSON_DEPTH, json_text, loads_record
from combe.format.keys import INT64_TEXT, key_fields, message_key
from combe.format.partition import partition_of, partitions_of
from combe.format.schema import RESERVED_PREFIX
from combe.format.types import arrow_type, kind, list_item, struct_fields, type_of_arrow

from .evolution import convert_value
from .fold import DELETED, Changes
from .records import Decoder
from .sources.base import Source
from .shapes import MAX_DEPTH

log = logging.getLogger(__name__)

OPEN_BRACE, CLOSE_BRACE, NEWLINE, CR = ord("{"), ord("}"), 10, 13
# The JSON reader splits its input into blocks of this size (in parallel); a line must fit in one.
READER_BLOCK = 1 << 20
# Larger parts are cut before they reach the JSON reader (values are joined into one binary value).
JOIN_BYTES = 64 << 20
TWO_63 = 2.0 ** 63


class Fallback(Exception):
    """The bulk path cannot decode this chunk as the per-record path would: decode it record by record."""


@dataclass(frozen=True)
class Places:
    """Where each record of a chunk is: a stream, and per record a partition and an offset (a line number)."""

    stream: str
    partitions: np.ndarray
    offsets: np.ndarray

    def subset(self, which: np.ndarray | slice) -> Places:
        return Places(self.stream, self.partitions[which], self.offsets[which])


class Decode:
    """Decodes chunks of one source into ``changes``; each method returns the chunk's bad records.

    ``bulk=False`` decodes every record by the per-record path (the reference the bulk path is tested against).
    ``shard`` (index, count): the cycle publishes that shard, so a record whose key belongs to another one
    (format/partition.py) is passed over, or is a bad record where the source holds the shard's records only
    (Source.holds_shard: a Kafka partition's producer did not partition by murmur2).
    """

    def __init__(self, decoder: Decoder, changes: Changes, source: Source, *, bulk: bool = True,
                 shard: tuple[int, int] | None = None) -> None:
        self.decoder = decoder
        self.fmt = decoder.fmt
        self.changes = changes
        self.source = source
        self.bulk = bulk
        self.shard = shard

    def where(self, places: Places, index: int) -> tuple[int, int, str]:
        """A record's partition, offset (as the source numbers it: Source.number) and its place in words."""
        partition = int(places.partitions[index])
        offset = self.source.number(places.stream, partition, int(places.offsets[index]))
        return partition, offset, self.source.describe(places.stream, partition, offset)

    def bad(self, places: Places, index: int, reason: str) -> BadRecordError:
        partition, offset, where = self.where(places, index)
        return BadRecordError(reason, stream=places.stream, partition=partition, offset=offset, where=where)

    def _note_empty_keys(self, keys: pa.Array, places: Places) -> None:
        if not pa.types.is_string(keys.type) or len(self.changes.empty_keys) >= 3:
            return
        empty = np.flatnonzero(pc.binary_length(keys).to_numpy(zero_copy_only=False) == 0)
        for index in empty[:3 - len(self.changes.empty_keys)]:
            self.changes.empty_keys.append(self.where(places, int(index))[2])

    # -- file lines ------------------------------------------------------------------------------

    def lines(self, stream: str, data: bytes | bytearray, first_line: int,
              delimiter: bytes | None, *, rows: bool = False) -> tuple[int, list[BadRecordError]]:
        """A block of whole lines (JSONL, or ``key<delimiter>value``); (records, bad records). ``rows``: each
        JSONL line is a row of a whole state (the key field among its fields), not a key and a value."""
        buf = np.frombuffer(data, np.uint8)
        ends = np.flatnonzero(buf == NEWLINE)
        if data and data[-1] != NEWLINE:
            ends = np.append(ends, len(data))
        starts = np.zeros(len(ends), np.int64)
        starts[1:] = ends[:-1] + 1
        numbers = first_line + np.arange(len(ends))
        while True:  # lines end at their newline less any carriage returns before it
            cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == CR)
            if not cr.any():
                break
            ends = ends - cr
        kept = ends > starts
        starts, ends, numbers = starts[kept], ends[kept], numbers[kept]
        places = Places(stream, np.zeros(len(starts), np.int64), numbers)
        if not len(starts):
            return 0, []
        if delimiter is None:
            return len(starts), self._jsonl(data, buf, starts, ends, places, rows)
        keys, values = _split(data, buf, starts, ends, delimiter)
        return len(starts), self.pairs(keys, values, places)

    def _jsonl(self, data: bytes | bytearray, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
               places: Places, rows: bool) -> list[BadRecordError]:
        bulk = self._bulk_rows if rows else self._bulk_jsonl
        if self.bulk:
            try:
                self.changes.add(bulk(data, buf, starts, ends, places))
                return []
            except Fallback as exc:
                log.debug("%s lines %d-%d: record by record (%s)", places.stream, places.offsets[0],
                          places.offsets[-1], exc)
        lines = [bytes(data[s:e]) for s, e in zip(starts.tolist(), ends.tolist())]
        decode = self.decoder.decode_row if rows else self.decoder.decode_jsonl
        good, decoded, errors = self._per_record(decode, [(line,) for line in lines], places)
        if self.bulk and len(good) and len(good) < len(lines):
            joined = b"\n".join(lines[i] for i in good.tolist()) + b"\n"
            joined_buf = np.frombuffer(joined, np.uint8)
            lengths = ends[good] - starts[good]
            new_ends = np.cumsum(lengths + 1) - 1
            try:
                self.changes.add(bulk(joined, joined_buf, new_ends - lengths, new_ends, places.subset(good)))
                return errors
            except Fallback:
                pass
        self.changes.add(self._rows_part(decoded))
        return errors

    def _bulk_jsonl(self, data: bytes | bytearray, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                    places: Places) -> pa.Table:
        _screen(data, buf, starts, ends)
        table = self._read(data, int((ends - starts).max()), {"value": self._value_struct()}, len(starts))
        if "key" not in table.column_names or table.column("key").null_count:
            raise Fallback("a line has no key")
        if "value" not in table.column_names:
            raise Fallback("no line has a value")
        value = table.column("value")
        nulls = np.flatnonzero(value.is_null().to_numpy(zero_copy_only=False))
        for index in nulls.tolist():  # null or absent: only the record itself can tell
            line = bytes(data[int(starts[index]):int(ends[index])])
            try:
                record = loads_record(line)
            except ValueError:
                raise Fallback("a line is not JSON") from None
            if not isinstance(record, dict) or "value" not in record:
                raise Fallback("a line has no value")
        keys = self._keys(table.column("key"))
        if self.fmt.value_format != "json":
            return self._raw_value_part(keys, value, places)
        if not pa.types.is_struct(value.type):
            raise Fallback("a value is not an object")
        return self._value_part(keys, value, places)

    def _bulk_rows(self, data: bytes | bytearray, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                   places: Places) -> pa.Table:
        """Lines that are rows of a whole state, each a JSON object holding the key field."""
        _screen(data, buf, starts, ends)
        return self._table_part(self._read(data, int((ends - starts).max()), self._value_struct_fields(),
                                           len(starts)), places)

    # -- rows of a whole state, changes given from Python --------------------------------------------

    def rows(self, rows: pa.RecordBatch | pa.Table | list[Any], places: Places) -> list[BadRecordError]:
        """Rows of a whole state: an Arrow batch or table, or a list of dicts; the bad rows."""
        if self.bulk:
            try:
                table = rows if not isinstance(rows, list) else _struct_rows(rows)
                self.changes.add(self._table_part(table, places))
                return []
            except Fallback as exc:
                log.debug("%s: %d rows row by row (%s)", places.stream, len(rows), exc)
        listed = rows if isinstance(rows, list) else rows.to_pylist()
        _, decoded, errors = self._per_record(self.decoder.decode_row, [(row,) for row in listed], places)
        self.changes.add(self._rows_part(decoded))
        return errors

    def records(self, keys: list[Any], values: list[Any], places: Places) -> list[BadRecordError]:
        """Changes given as Python keys and values (None deletes): decoded one by one, as they were given."""
        _, decoded, errors = self._per_record(self.decoder.decode, list(zip(keys, values)), places)
        self.changes.add(self._rows_part(decoded))
        return errors

    def _table_part(self, table: pa.RecordBatch | pa.Table, places: Places) -> pa.Table:
        """A whole state's rows as typed columns: the key field's column gives the keys, the others the values
        (as the combe types that hold the same values: int32 as int64, large_string as string...)."""
        key_field = self.fmt.key_field
        if self.decoder.compound and key_field not in table.column_names:
            raw = self._fields_key(table)  # the key's fields are the rows' own columns, and stay value columns
        elif key_field not in table.column_names:
            raise Fallback(f"no {key_field!r} column")
        else:
            raw = one_array(table.column(key_field))
        if raw.null_count:
            raise Fallback("a key is null")
        keys = self._keys(_plain(raw))
        names = [name for name in table.column_names if name != key_field]
        children = [_plain(one_array(table.column(name))) for name in names]
        return self._fields_part(keys, names, children, np.zeros(table.num_rows, np.bool_), places)

    def _fields_key(self, table: pa.RecordBatch | pa.Table) -> pa.Array:
        """A compound key read from the columns named like its fields, as a struct array (null where one is)."""
        names = [name for name, _ in key_fields(self.fmt.key_type)]
        if not set(names) <= set(table.column_names):
            raise Fallback("a key field's column is absent")
        children = [_plain(one_array(table.column(name))) for name in names]
        if any(child.null_count for child in children):
            raise Fallback("a key field is null")
        return pa.StructArray.from_arrays(children, names=names)

    # -- key/value pairs (kcat lines, Kafka messages) ----------------------------------------------

    def pairs(self, keys: pa.Array, values: pa.Array, places: Places) -> list[BadRecordError]:
        """Raw keys and values (binary, null where absent), in arrival order; the bad records."""
        if self.bulk:
            try:
                for part in self._bulk_pairs(keys, values, places):
                    self.changes.add(part)
                return []
            except Fallback as exc:
                log.debug("%s: %d records record by record (%s)", places.stream, len(keys), exc)
        return self._pairs_by_record(keys, values, places)

    def _pairs_by_record(self, keys: pa.Array, values: pa.Array, places: Places) -> list[BadRecordError]:
        """Each record by the per-record path, which names the bad ones; the good ones in bulk again."""
        raw_keys, raw_values = keys.to_pylist(), values.to_pylist()
        good, decoded, errors = self._per_record(self.decoder.decode, list(zip(raw_keys, raw_values)), places)
        if self.bulk and len(good) and len(good) < len(raw_keys):
            try:
                chosen = pa.array(good)
                for part in self._bulk_pairs(keys.take(chosen), values.take(chosen), places.subset(good)):
                    self.changes.add(part)
                return errors
            except Fallback:
                pass
        self.changes.add(self._rows_part(decoded))
        return errors

    def _bulk_pairs(self, keys: pa.Array, values: pa.Array, places: Places) -> Iterator[pa.Table]:
        if keys.null_count:
            raise Fallback("a record has no key")
        if self.fmt.value_format != "json":
            yield self._raw_value_part(self._keys(keys), values, places)
            return
        objects = values.drop_null()
        if len(objects):
            if not pc.all(pc.starts_with(objects, "{")).as_py():
                raise Fallback("a value is not a JSON object")
            if pc.any(pc.match_substring(objects, "\n")).as_py() or pc.any(pc.match_substring(objects, "\r")).as_py():
                raise Fallback("a value holds a line break")
        sizes = pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) + 1
        parts = [self._objects_part(keys.slice(start, stop - start), values.slice(start, stop - start),
                                    places.subset(slice(start, stop))) for start, stop in _join_pieces(sizes)]
        yield from parts

    def _objects_part(self, keys: pa.Array, values: pa.Array, places: Places) -> pa.Table:
        """Records whose values are single-line JSON objects (or null): one part, through the JSON reader."""
        decoded = self._keys(keys)
        present = values.is_valid().to_numpy(zero_copy_only=False)
        objects = values.drop_null()
        if len(objects):
            joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(objects)], pa.int32()), objects), b"\n")
            data = joined[0].as_buffer()
            lengths = pc.binary_length(objects).to_numpy(zero_copy_only=False).astype(np.int64)
            ends = np.cumsum(lengths + 1) - 1
            _screen(data, np.frombuffer(data, np.uint8), ends - lengths, ends)
            table = self._read(data, int(lengths.max()), self._value_struct_fields(), len(objects))
            struct = pa.StructArray.from_arrays([column.combine_chunks() for column in table.columns],
                                                fields=list(table.schema)) if table.num_columns \
                else pa.array([{}] * len(objects), pa.struct([]))  # only empty objects: no column to build on
        else:
            struct = pa.nulls(0, pa.struct([]))
        # One row per record again: tombstones are null rows.
        where = np.cumsum(present) - 1
        value = struct.take(pa.array(where, mask=~present))
        return self._value_part(decoded, value, places)

    def json_lines(self, keys: pa.Array, lines: pa.Array, deleted: np.ndarray, places: Places, *,
                   clean: bool) -> list[BadRecordError]:
        """JSON values as ``value_lines`` made them (taken in any order), in arrival order; the bad records.
        ``clean``: no value holds a line break (``value_lines`` says so for each batch of values).

        The bulk path hands the lines' own buffer to the JSON reader: no copy joins them, and tombstones are
        rows of their own (``{}``, masked), so no copy spreads the decoded rows between them either.
        """
        if self.bulk:
            try:
                if not clean:
                    raise Fallback("a value holds a line break")
                sizes = np.diff(np.frombuffer(lines.buffers()[1], "<i8")[lines.offset:lines.offset + len(lines) + 1])
                parts = [self._lines_part(keys.slice(start, stop - start), lines.slice(start, stop - start),
                                          deleted[start:stop], places.subset(slice(start, stop)))
                         for start, stop in _join_pieces(sizes)]
                for part in parts:
                    self.changes.add(part)
                return []
            except Fallback as exc:
                log.debug("%s: %d records record by record (%s)", places.stream, len(keys), exc)
        values = pc.binary_slice(lines, 0, -1).cast(pa.binary())
        values = pc.if_else(pa.array(deleted), pa.nulls(len(values), pa.binary()), values)
        return self._pairs_by_record(keys, values, places)

    def _lines_part(self, keys: pa.Array, lines: pa.Array, deleted: np.ndarray, places: Places) -> pa.Table:
        if keys.null_count:
            raise Fallback("a record has no key")
        decoded = self._keys(keys)
        offsets = np.frombuffer(lines.buffers()[1], "<i8")[lines.offset:lines.offset + len(lines) + 1]
        first, last = int(offsets[0]), int(offsets[-1])
        data = lines.buffers()[2].slice(first, last - first)
        buf = np.frombuffer(data, np.uint8)
        starts, ends = offsets[:-1] - first, offsets[1:] - first - 1
        _screen(data, buf, starts, ends)
        table = self._read(data, int((ends - starts).max()), self._value_struct_fields(), len(lines))
        struct = pa.StructArray.from_arrays([column.combine_chunks() for column in table.columns],
                                            fields=list(table.schema), mask=pa.array(deleted, pa.bool_())) \
            if table.num_columns else pa.array([None if gone else {} for gone in deleted.tolist()], pa.struct([]))
        return self._value_part(decoded, struct, places)

    # -- the JSON reader -------------------------------------------------------------------------

    def _value_struct_fields(self) -> dict[str, pa.DataType]:
        return {name: arrow_type(t) for name, t in self.changes.schema.columns.items() if _explicit(t)}

    def _value_struct(self) -> pa.DataType:
        if self.fmt.value_format != "json":
            return pa.string()
        return pa.struct([pa.field(name, t) for name, t in self._value_struct_fields().items()])

    def _read(self, data: bytes | bytearray | pa.Buffer, longest: int, explicit: dict[str, pa.DataType],
              rows: int) -> pa.Table:
        """``data`` (one JSON object a line) through Arrow's reader, with ``explicit`` as the schema it knows."""
        try:
            pa.Array.from_buffers(pa.binary(), 1, [None, pa.py_buffer(np.array([0, len(data)], np.int32)),
                                                   pa.py_buffer(data)]).cast(pa.string())
        except pa.ArrowInvalid:
            raise Fallback("not UTF-8") from None
        options = pj.ReadOptions(block_size=max(READER_BLOCK, longest + 2))
        for _ in range(3):
            parse = pj.ParseOptions(explicit_schema=pa.schema([pa.field(n, t) for n, t in explicit.items()]),
                                    unexpected_field_behavior="infer", newlines_in_values=False)
            try:
                table = pj.read_json(pa.BufferReader(data), read_options=options, parse_options=parse)
            except pa.ArrowException as exc:  # any refusal of the reader: the per-record path decides
                raise Fallback(str(exc)[:200]) from None
            if table.num_rows != rows:
                raise Fallback("a line holds more than one JSON value")
            try:
                table.validate(full=True)  # the reader can build broken arrays (a list of nulls, in Arrow 26)
            except pa.ArrowException as exc:
                raise Fallback(f"the reader built an invalid table: {str(exc)[:200]}") from None
            wanted = {f.name: _textual(f.type) for f in table.schema}
            if all(wanted[f.name] == f.type for f in table.schema):
                return table
            explicit = wanted  # a field read as a timestamp: read it again as text
        raise Fallback("field types did not settle")

    # -- parts -------------------------------------------------------------------------------------

    def _keys(self, raw: pa.Array) -> pa.Array:
        """Keys as the dataset stores them, by the rule of Decoder.key; Fallback where that path would refuse."""
        target = self.fmt.key_type
        if self.decoder.compound:
            return self._compound_keys(raw)
        if pa.types.is_binary(raw.type):
            try:
                raw = raw.cast(pa.string())
            except pa.ArrowInvalid:
                raise Fallback("a key is not UTF-8") from None
        if target == "string":
            if pa.types.is_string(raw.type):
                return raw
            if pa.types.is_integer(raw.type):
                return raw.cast(pa.string())
            raise Fallback(f"keys of type {raw.type}")
        if pa.types.is_integer(raw.type):
            return raw.cast(pa.int64())
        if not pa.types.is_string(raw.type):
            raise Fallback(f"keys of type {raw.type}")
        if not pc.all(pc.match_substring_regex(raw, INT64_TEXT)).as_py() or pc.max(pc.utf8_length(raw)).as_py() > 19:
            raise Fallback("a key is not int64 text")
        try:
            return raw.cast(pa.int64())
        except pa.ArrowInvalid:
            raise Fallback("a key is beyond int64") from None

    def _compound_keys(self, raw: pa.Array) -> pa.Array:
        """Compound keys (JSON objects' text, or objects the JSON reader read as structs) as their stored text.

        One Python call per key (format/keys.py ``message_key``): Arrow's reader would take ``7.0`` or a
        repeated field where the rule refuses them.
        """
        if not (pa.types.is_binary(raw.type) or pa.types.is_string(raw.type) or pa.types.is_struct(raw.type)):
            raise Fallback(f"keys of type {raw.type}")
        try:
            return pa.array([message_key(key, self.fmt.key_type) for key in raw.to_pylist()], pa.string())
        except ValueError:
            raise Fallback("a key is not an object of the key's fields") from None

    def _raw_value_part(self, keys: pa.Array, value: pa.Array, places: Places) -> pa.Table:
        """``value_format`` string or bytes: one ``value`` column."""
        if self.fmt.value_format == "string":
            if pa.types.is_binary(value.type):
                try:
                    value = value.cast(pa.string())
                except pa.ArrowInvalid:
                    raise Fallback("a value is not UTF-8") from None
            if not pa.types.is_string(value.type) and value.null_count != len(value):
                raise Fallback("a value is not a string")
            value = value.cast(pa.string())
        else:
            if not (pa.types.is_string(value.type) or pa.types.is_binary(value.type)) \
                    and value.null_count != len(value):
                raise Fallback("a value is not a string")
            value = value.cast(pa.binary())
        self._note_empty_keys(keys, places)
        return self._part(keys, {"value": (value, self.changes.schema.columns.get("value", "null"))},
                          value.is_null().to_numpy(zero_copy_only=False))

    def _value_part(self, keys: pa.Array, value: pa.Array, places: Places) -> pa.Table:
        """JSON objects read as one struct array (null: a tombstone) -> value columns, checked."""
        deleted = value.is_null().to_numpy(zero_copy_only=False)
        names = [value.type.field(position).name for position in range(value.type.num_fields)]
        return self._fields_part(keys, names, value.flatten(), deleted, places)

    def _fields_part(self, keys: pa.Array, names: list[str], children: list[pa.Array], deleted: np.ndarray,
                     places: Places) -> pa.Table:
        """Value columns ``names`` -> a part, checked as the per-record path checks a value's fields."""
        columns: dict[str, tuple[pa.Array, str]] = {}
        key_field = self.fmt.key_field
        for name, child in zip(names, children):
            try:
                combe = type_of_arrow(child.type)
            except FormatError:
                raise Fallback(f"field {name!r} has type {child.type}") from None
            if name.startswith(RESERVED_PREFIX) or _depth(child.type) > MAX_DEPTH + 1:
                raise Fallback(f"field {name!r}")
            _check_floats(child)
            if name == key_field:
                self._check_inner_keys(keys, child, deleted)
                continue
            if self.changes.schema.columns.get(name) == "json":
                # Canonical JSON text needs each value as parsed (1 and 1.0 differ): the per-record path.
                raise Fallback(f"field {name!r} is a json column")
            columns[name] = (child, combe)
        self._note_empty_keys(keys, places)
        return self._part(keys, columns, deleted)

    def _check_inner_keys(self, keys: pa.Array, inner: pa.Array, deleted: np.ndarray) -> None:
        """A value's own key field must agree with the record's key (present and null is a disagreement)."""
        if inner.null_count != int(deleted.sum()):
            raise Fallback("a value's key field is null or absent")
        live = pa.array(~deleted)
        try:
            found = self._keys(inner.filter(live))
        except Fallback:
            raise Fallback("a value's key field does not read as a key") from None
        if found.type != keys.type or not pc.all(pc.equal(found, keys.filter(live))).as_py():
            raise Fallback("a value's key field disagrees with the record's key")

    def _part(self, keys: pa.Array, columns: dict[str, tuple[pa.Array, str]], deleted: np.ndarray) -> pa.Table:
        if self.shard is not None:
            mine = partitions_of(keys, self.fmt.key_type, self.shard[1]) == self.shard[0]
            if not mine.all():
                if self.source.holds_shard:
                    raise Fallback("a key of another shard")  # the per-record path names it
                kept = pa.array(mine)
                keys, deleted = keys.filter(kept), deleted[mine]
                columns = {name: (array.filter(kept), combe) for name, (array, combe) in columns.items()}
        try:
            self.changes.grow({name: combe for name, (_, combe) in columns.items()})
        except ValueError as exc:
            raise Fallback(str(exc)) from None
        names = [self.fmt.key_field, *columns, DELETED]
        arrays = [keys, *(array for array, _ in columns.values()), pa.array(deleted, pa.bool_())]
        return pa.Table.from_arrays(arrays, names=names)

    # -- record by record --------------------------------------------------------------------------

    def _per_record(self, decode: Callable[..., tuple[Any, dict[str, Any] | None]], records: list[tuple[Any, ...]],
                    places: Places) -> tuple[np.ndarray, list[tuple[Any, dict[str, Any] | None]],
                                             list[BadRecordError]]:
        """Decode each record (``decode(*record)`` gives (key, row) or raises ValueError) and grow the schema
        record by record: (indices of the good ones, their (key, row), the bad ones)."""
        columns, retyped = dict(self.changes.schema.columns), dict(self.changes.retyped)
        good: list[int] = []
        decoded: list[tuple[Any, dict[str, Any] | None]] = []
        errors: list[BadRecordError] = []
        for index, record in enumerate(records):
            try:
                key, row = decode(*record)
                if not self._mine(key, places, index):
                    continue  # another shard's record, read by this shard's cycle too: passed over
                if row is not None:
                    trial, trial_retyped = dict(columns), dict(retyped)
                    self.changes.check_row(row, trial, trial_retyped)
                    columns, retyped = trial, trial_retyped
            except ValueError as exc:
                errors.append(self.bad(places, index, str(exc)))
            else:
                good.append(index)
                decoded.append((key, row))
                if key == "" and len(self.changes.empty_keys) < 3:
                    self.changes.empty_keys.append(self.where(places, index)[2])
        self.changes.commit(columns, retyped)
        return np.array(good, np.int64), decoded, errors

    def _mine(self, key: str | int, places: Places, index: int) -> bool:
        """Whether a record of key ``key`` belongs to the shard published; ValueError where the source holds
        only that shard's records, so that one of another shard is a bad record."""
        if self.shard is None:
            return True
        held, count = self.shard
        belongs = partition_of(key, self.fmt.key_type, count)
        if belongs == held:
            return True
        if not self.source.holds_shard:
            return False
        partition = int(places.partitions[index])
        raise ValueError(f"key {key!r} belongs to shard {belongs} of {count} (murmur2 of its "
                         f"{'decimal text' if self.fmt.key_type == 'int64' else 'UTF-8'}, as Kafka's default "
                         f"partitioner), but partition {partition} holds shard {held}: the topic's producer must "
                         "partition keys with murmur2 (the Java client's default; librdkafka's "
                         "partitioner=murmur2_random)")

    def _rows_part(self, decoded: list[tuple[Any, dict[str, Any] | None]]) -> pa.Table:
        """A part from decoded Python rows (the per-record path's own Arrow build)."""
        schema = self.changes.schema
        rows = [row if row is not None else {} for _, row in decoded]
        arrays = [pa.array([key for key, _ in decoded], arrow_type(schema.key_stored))]
        names = [schema.key_field]
        for name, combe in schema.columns.items():
            values = [row.get(name) for row in rows]
            if name in self.changes.retyped:
                values = [convert_value(v, combe) for v in values]
            arrays.append(_python_array(values, combe))
            names.append(name)
        arrays.append(pa.array([row is None for _, row in decoded], pa.bool_()))
        names.append(DELETED)
        return pa.Table.from_arrays(arrays, names=names)


def _struct_rows(rows: list[Any]) -> pa.RecordBatch:
    """A list of dicts as one record batch, its types inferred over every row (not the first row's alone)."""
    try:
        struct = pa.array(rows)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise Fallback(f"the rows do not convert to Arrow: {str(exc)[:200]}") from None
    if not pa.types.is_struct(struct.type) or struct.null_count:
        raise Fallback("a row is not a dict")
    return pa.RecordBatch.from_struct_array(struct)


def _plain_type(data_type: pa.DataType) -> pa.DataType:
    """The combe type's Arrow type that holds the values of ``data_type``, where one does (other types, a
    timestamp say, are left as they are: type_of_arrow refuses them)."""
    if pa.types.is_dictionary(data_type):
        return _plain_type(data_type.value_type)
    if pa.types.is_integer(data_type):
        return pa.int64()
    if pa.types.is_floating(data_type):
        return pa.float64()
    if pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return pa.string()
    if pa.types.is_large_binary(data_type) or pa.types.is_binary_view(data_type) \
            or pa.types.is_fixed_size_binary(data_type):
        return pa.binary()
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_fixed_size_list(data_type) \
            or pa.types.is_list_view(data_type) or pa.types.is_large_list_view(data_type):
        return pa.list_(_plain_type(data_type.value_type))
    if pa.types.is_map(data_type):
        return pa.map_(_plain_type(data_type.key_type), _plain_type(data_type.item_type))
    if pa.types.is_struct(data_type):
        return pa.struct([pa.field(f.name, _plain_type(f.type)) for f in data_type])
    return data_type


def _plain(array: pa.Array) -> pa.Array:
    """``array`` cast to ``_plain_type`` of its type; Fallback where a value does not fit (a uint64 past int64)."""
    target = _plain_type(array.type)
    if target == array.type:
        return array
    try:
        return array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise Fallback(f"a {array.type} column does not convert to {target}: {str(exc)[:200]}") from None


def _join_pieces(sizes: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of runs of records whose ``sizes`` (bytes, joined) add up to about JOIN_BYTES: a joined
    buffer must stay well under 2 GiB."""
    if not len(sizes):
        return []
    totals = np.cumsum(sizes)
    cuts = np.searchsorted(totals, np.arange(JOIN_BYTES, int(totals[-1]), JOIN_BYTES))
    bounds = [0, *sorted(set(cuts.tolist()) - {0, len(sizes)}), len(sizes)]
    return list(zip(bounds, bounds[1:]))


def value_lines(values: list[bytes | None]) -> tuple[pa.Array, np.ndarray, bool]:
    """Message values as JSON lines for ``Decode.json_lines``: each value and a newline, ``{}`` standing for a
    tombstone (None); which values were tombstones; and whether no value holds a line break of its own. Lines
    taken from these in any order lie back to back, ready for the JSON reader. Building them costs a join
    and two scans in C, no Python work per value."""
    deleted = np.zeros(len(values), np.bool_)
    present = cast("list[bytes]", values)
    if values.count(None):
        deleted = np.fromiter(map(operator.is_, values, repeat(None)), np.bool_, len(values))
        present = [b"{}" if value is None else value for value in values]
    offsets = np.zeros(len(present) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, present), np.int64, len(present)) + 1, out=offsets[1:])
    data = b"\n".join([*present, b""])
    clean = data.count(b"\n") == len(present) and data.find(b"\r") < 0
    lines = pa.Array.from_buffers(pa.large_binary(), len(present), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return lines, deleted, clean


def _python_array(values: list[Any], combe: str) -> pa.Array:
    """Python values as an array of combe type ``combe`` (json columns as canonical text)."""
    if combe == "json":
        return pa.array([None if v is None else json_text(v) for v in values], pa.string())
    try:
        return pa.array(values, arrow_type(combe))
    except (pa.ArrowInvalid, OverflowError):
        # Integers in float columns beyond 2**53: to the nearest float, as the JSON reader reads them.
        return pa.array([_floats(v, combe) for v in values], arrow_type(combe))


def _floats(value: Any, combe: str) -> Any:
    if value is None:
        return None
    head = kind(combe)
    if head == "float64":
        return float(value)
    if head == "list":
        return [_floats(v, list_item(combe)) for v in value]
    if head == "struct":
        types = dict(struct_fields(combe))
        return {name: _floats(v, types[name]) for name, v in value.items()}
    return value


def _explicit(combe: str) -> bool:
    """Whether a held type can be given to Arrow's reader (it cannot read values into a null type)."""
    return combe != "json" and not _has_null(combe)


def _has_null(combe: str) -> bool:
    head = kind(combe)
    if head == "null":
        return True
    if head == "list":
        return _has_null(list_item(combe))
    if head == "struct":
        return any(_has_null(t) for _, t in struct_fields(combe))
    if head == "map":
        return True
    return False


def _textual(data_type: pa.DataType) -> pa.DataType:
    """``data_type`` with every timestamp or date (Arrow's reading of ISO text) as a string."""
    if pa.types.is_timestamp(data_type) or pa.types.is_date(data_type) or pa.types.is_time(data_type):
        return pa.string()
    if pa.types.is_list(data_type):
        return pa.list_(_textual(data_type.value_type))
    if pa.types.is_struct(data_type):
        return pa.struct([pa.field(f.name, _textual(f.type)) for f in data_type])
    return data_type


def _depth(data_type: pa.DataType) -> int:
    if pa.types.is_list(data_type):
        return 1 + _depth(data_type.value_type)
    if pa.types.is_struct(data_type):
        return 1 + max((_depth(f.type) for f in data_type), default=0)
    return 0


def _check_floats(array: pa.Array | pa.ChunkedArray) -> None:
    """No NaN or infinity (not JSON), and no float at or beyond 2**63 (maybe an integer too long for int64)."""
    if isinstance(array, pa.ChunkedArray):
        for chunk in array.chunks:
            _check_floats(chunk)
        return
    data_type = array.type
    if pa.types.is_floating(data_type):
        if len(array) - array.null_count:
            finite = pc.is_finite(array)
            if not pc.all(finite).as_py():
                raise Fallback("NaN or infinity")
            if pc.max(pc.abs(array)).as_py() >= TWO_63:
                raise Fallback("a number at or beyond 2**63")
    elif pa.types.is_list(data_type):
        _check_floats(array.flatten())
    elif pa.types.is_struct(data_type):
        for child in array.flatten():
            _check_floats(child)


def _screen(data: bytes | bytearray | pa.Buffer, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """What the reader would read otherwise than a JSON parser: a line that does not start an object (blank,
    ``null``, ...) or does not end with ``}``, or one that may nest deeper than MAX_JSON_DEPTH.

    The reader takes a line break between tokens as any whitespace, so an object may run on over the next
    line (``{"a":`` then ``{"b": 1}}``); a line holding two objects then makes the row count come out right
    and every row after it would be put to the wrong line. No object can run on from a line that ends with
    ``}`` to one that starts with ``{`` (no JSON token sequence has ``}`` then ``{``, and a string cannot
    hold a raw line break), so with both checks each line starts at least one value of its own and the
    reader's row count (Decoder._read) proves it is exactly one."""
    if not len(starts):
        return
    if not (buf[starts] == OPEN_BRACE).all():
        raise Fallback("a line does not start with {")
    if not (buf[np.maximum(ends - 1, starts)] == CLOSE_BRACE).all():
        raise Fallback("a line does not end with }")
    long = np.flatnonzero(ends - starts > MAX_JSON_DEPTH)
    view = memoryview(data)
    for index in long.tolist():
        line = bytes(view[int(starts[index]):int(ends[index])])
        if line.count(b"{") + line.count(b"[") > MAX_JSON_DEPTH:
            raise Fallback("a line may nest too deep")


def _split(data: bytes | bytearray, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
           delimiter: bytes) -> tuple[pa.Array, pa.Array]:
    """``key<delimiter>value`` lines as key and value arrays, cut out of the block's bytes by Arrow: a line
    without the delimiter has a null key; an empty value is null (a tombstone)."""
    if len(delimiter) == 1:
        marks = np.flatnonzero(buf == delimiter[0])
        first = np.searchsorted(marks, starts)
        at = marks[np.minimum(first, len(marks) - 1)] if len(marks) else ends
        found = (first < len(marks)) & (at < ends) if len(marks) else np.zeros(len(starts), np.bool_)
    else:
        at = np.array([data.find(delimiter, s, e) for s, e in zip(starts.tolist(), ends.tolist())], np.int64)
        found = at >= 0
    at = np.where(found, at, ends)
    value_starts = np.where(found, at + len(delimiter), ends)
    # Four pieces a line, back to back: key, delimiter, value, and what lies up to the next line.
    offsets = np.empty(4 * len(starts) + 1, np.int64)
    offsets[0:-1:4], offsets[1::4], offsets[2::4], offsets[3::4] = starts, at, value_starts, ends
    offsets[-1] = ends[-1]
    pieces = pa.Array.from_buffers(pa.large_binary(), 4 * len(starts),
                                   [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    key_at = np.arange(0, 4 * len(starts), 4)
    keys = pieces.take(pa.array(key_at, mask=~found)).cast(pa.binary())
    values = pieces.take(pa.array(key_at + 2, mask=~found | (value_starts >= ends))).cast(pa.binary())
    return keys, values


__all__ = ["Decode", "Fallback", "Places", "value_lines"]
