"""The state checksum: an order-independent sum of per-row hashes, so a cycle can check what it changed.

``h128:<32 hex>`` is the sum, modulo 2^128, of a 128-bit hash of every row.
Because it is a sum, the checksum of the next version follows from this one
and the rows a delta touches alone (``advance``): subtract the hashes of the
rows it removes or replaces, add those of the rows it adds or puts in their
place. Checking a delta then costs what the delta holds, not what the
dataset holds. A null value contributes nothing to its row's hash, so a
column added later (null in every older row) leaves older rows' hashes as
they were. docs/FORMAT.md specifies every step; this module is its
reference implementation, vectorised with numpy over the Arrow buffers
(rows in slices small enough to stay in cache, so the gathers below hit it),
the rows cut into one span per core (format/cores.py).

Version 1 manifests carry a ``sha256:`` checksum over the whole table in
order; ``legacy_state_checksum`` computes it, and ``checksum_of`` picks the
scheme a recorded checksum names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .cores import each, spans
from .errors import FormatError
from .schema import RESERVED_PREFIX
from .types import kind, list_item, map_types, struct_fields, type_of_field

PREFIX = "h128:"
LEGACY_PREFIX = "sha256:"
_CHECKSUM = re.compile(r"h128:[0-9a-f]{32}|sha256:[0-9a-f]{64}")

MASK64 = (1 << 64) - 1
MOD128 = 1 << 128
K0 = 0x243F6A8885A308D3  # the hash of a sequence starts from K0 + its length
P = 0x9E3779B97F4A7C15  # odd: multiplying by it is a bijection modulo 2^64
LANE_LO = 0x452821E638D01377  # the two halves of a row's 128-bit hash
LANE_HI = 0xBE5466CF34E90C6C
NULL_ITEM = 0xC0AC29B7C97C50DD  # stands for a null item of a list or a null map value
# Rows per slice: the data a slice gathers from stays in the CPU cache.
SLICE_ROWS = 32768

_U64 = np.uint64
_M1, _M2, _S33 = _U64(0xFF51AFD7ED558CCD), _U64(0xC4CEB9FE1A85EC53), _U64(33)
_P = _U64(P)


def fmix64(x: int) -> int:
    """MurmurHash3's 64-bit finalizer: every input bit affects every output bit."""
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK64
    return x ^ (x >> 33)


def _fmix(x: np.ndarray) -> np.ndarray:
    """fmix64 of every element, in place."""
    x ^= x >> _S33
    x *= _M1
    x ^= x >> _S33
    x *= _M2
    x ^= x >> _S33
    return x


def sequence_hash(words: Iterable[int], count: int, tag: int) -> int:
    """The hash of a sequence of 64-bit words: the rule for bytes (8 at a time) and for list items."""
    acc = (K0 + count) & MASK64
    for word in words:
        acc = ((acc ^ word) * P) & MASK64
    return fmix64(acc ^ tag)


def bytes_hash(data: bytes, tag: int) -> int:
    """The hash of a byte string: its length, then its bytes as little-endian words, zero-padded."""
    words = (int.from_bytes(data[i:i + 8].ljust(8, b"\0"), "little") for i in range(0, len(data), 8))
    return sequence_hash(words, len(data), tag)


TAGS: dict[str, int] = {name: bytes_hash(name.encode(), 0) for name in (
    "null", "bool", "int64", "float64", "string", "binary", "json", "list", "struct", "map", "name")}


def name_seed(name: str) -> int:
    """What a column's or a struct field's value hash is combined with: its name."""
    return bytes_hash(name.encode(), TAGS["name"])


def _offsets(array: pa.Array) -> np.ndarray:
    """The array's value offsets as int64, relative to its own slice."""
    width = "<i8" if pa.types.is_large_binary(array.type) or pa.types.is_large_string(array.type) else "<i4"
    return np.frombuffer(array.buffers()[1], dtype=width)[array.offset:array.offset + len(array) + 1].astype(np.int64)


def _longest_first(full: np.ndarray) -> np.ndarray:
    """The order that puts sequences with more whole words first (a radix sort: the counts are small)."""
    longest = int(full.max()) if len(full) else 0
    return np.argsort((longest - full).astype(np.uint16 if longest < 65536 else np.int64), kind="stable")


def _sequence_hashes(counts: np.ndarray, full: np.ndarray, order: np.ndarray,
                     word: Callable[[int, int], np.ndarray],
                     tail: Callable[[np.ndarray], None] | None, tag: int) -> np.ndarray:
    """``sequence_hash`` for many sequences at once.

    ``counts`` are what each hash starts from (byte or item counts), ``full``
    the number of whole words of each, ``order`` puts the sequences longest
    first (``_longest_first``), so the ones that still have a word k are a
    prefix of it: ``word(k, c)`` gives word k of the first c sequences in that
    order, and each step is one gather and two operations. ``tail(acc)``
    folds in the last, partial word of each sequence that has one.
    """
    n = len(counts)
    longest = int(full[order[0]]) if n else 0
    acc = counts[order].astype(_U64) + _U64(K0)
    remaining = n - np.cumsum(np.bincount(full, minlength=longest + 1))  # how many have more than k words
    for k in range(longest):
        part = acc[:int(remaining[k])]
        part ^= word(k, len(part))
        part *= _P
    if tail is not None:
        tail(acc)
    acc ^= _U64(tag)
    out = np.empty(n, _U64)
    out[order] = _fmix(acc)
    return out


_TAIL_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(8)], dtype=_U64)


def _bytes_hashes(array: pa.Array, tag: int) -> np.ndarray:
    """bytes_hash of every value of a string or binary array (nulls hash as whatever their slot holds)."""
    offsets = _offsets(array)
    lengths = np.diff(offsets)
    start = int(offsets[0]) if len(offsets) else 0
    end = int(offsets[-1]) if len(offsets) else 0
    data = array.buffers()[2]
    padded = np.zeros(end - start + 8, np.uint8)
    if data is not None and end > start:
        padded[:end - start] = np.frombuffer(data, np.uint8, end - start, start)
    # Every byte position as the start of a little-endian word (an unaligned, overlapping view).
    words = np.ndarray((end - start + 1,), dtype="<u8", buffer=padded, strides=(1,))
    full = lengths >> 3
    order = _longest_first(full)
    starts = offsets[:-1][order] - start  # in the longest-first order

    def word(k: int, count: int) -> np.ndarray:
        return words[starts[:count] + 8 * k]

    def tail(acc: np.ndarray) -> None:
        rest = (lengths & 7)[order]
        partial = np.flatnonzero(rest)
        last = words[starts[partial] + 8 * full[order][partial]] & _TAIL_MASKS[rest[partial]]
        acc[partial] = (acc[partial] ^ last) * _P

    return _sequence_hashes(lengths, full, order, word, tail, tag)


def _list_hashes(array: pa.Array, type_: str) -> np.ndarray:
    """The hash of every list of a list array: its items' hashes as the words of a sequence."""
    offsets = _offsets(array)
    start, end = (int(offsets[0]), int(offsets[-1])) if len(offsets) else (0, 0)
    items = array.values.slice(start, end - start)
    hashes, valid = value_hashes(items, list_item(type_))
    hashes = np.where(valid, hashes, _U64(NULL_ITEM))
    starts = offsets[:-1] - start
    lengths = np.diff(offsets)

    order = _longest_first(lengths)
    starts = starts[order]

    def word(k: int, count: int) -> np.ndarray:
        return hashes[starts[:count] + k]

    return _sequence_hashes(lengths, lengths, order, word, None, TAGS["list"])


def _struct_sum(parts: Iterable[tuple[np.ndarray, np.ndarray, int]], n: int) -> np.ndarray:
    """Sum over the parts of ((value hash ^ name seed) * P), where the value is not null."""
    total = np.zeros(n, _U64)
    for hashes, valid, seed in parts:
        term = (hashes ^ _U64(seed)) * _P
        total += np.where(valid, term, _U64(0))
    return total


def _struct_hashes(array: pa.Array, type_: str) -> np.ndarray:
    n = len(array)
    parts = []
    for i, (name, field_type) in enumerate(struct_fields(type_)):
        child = pc.struct_field(array, [i])
        hashes, valid = value_hashes(child, field_type)
        parts.append((hashes, valid, name_seed(name)))
    total = _struct_sum(parts, n)
    total ^= _U64(TAGS["struct"])
    return _fmix(total)


def _map_hashes(array: pa.Array, type_: str) -> np.ndarray:
    """The hash of every map: entries summed, so their order does not matter (a JSON object's does not)."""
    key_type, value_type = map_types(type_)
    offsets = _offsets(array)
    start, end = (int(offsets[0]), int(offsets[-1])) if len(offsets) else (0, 0)
    keys, _ = value_hashes(array.keys.slice(start, end - start), key_type)
    values, valid = value_hashes(array.items.slice(start, end - start), value_type)
    values = np.where(valid, values, _U64(NULL_ITEM))
    entries = _fmix(keys ^ (values * _P))
    sums = np.zeros(len(array), _U64)
    lengths = np.diff(offsets)
    nonempty = np.flatnonzero(lengths)
    if len(nonempty):
        sums[nonempty] = np.add.reduceat(entries, (offsets[:-1] - start)[nonempty])
    sums ^= _U64(TAGS["map"])
    return _fmix(sums)


def value_hashes(array: pa.Array, type_: str) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit hash of every value of ``array`` (of combe type ``type_``), and which are not null."""
    n = len(array)
    head = kind(type_)
    valid = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else np.ones(n, np.bool_)
    if head == "null" or n == 0:
        return np.zeros(n, _U64), np.zeros(n, np.bool_) if head == "null" else valid
    if head in ("int64", "float64"):
        words = np.frombuffer(array.buffers()[1], dtype="<u8", count=n, offset=8 * array.offset).copy()
        return _fmix(words ^ _U64(TAGS[head])), valid
    if head == "bool":
        words = array.fill_null(False).to_numpy(zero_copy_only=False).astype(_U64)
        return _fmix(words ^ _U64(TAGS["bool"])), valid
    if head in ("string", "binary", "json"):
        return _bytes_hashes(array, TAGS[head]), valid
    if head == "list":
        return _list_hashes(array, type_), valid
    if head == "struct":
        return _struct_hashes(array, type_), valid
    if head == "map":
        return _map_hashes(array, type_), valid
    raise FormatError(f"no hash is defined for type {type_}")


def _data_fields(schema: pa.Schema) -> list[tuple[int, str, str]]:
    return [(i, f.name, type_of_field(f)) for i, f in enumerate(schema) if not f.name.startswith(RESERVED_PREFIX)]


def row_digests(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """A 64-bit digest of every row (uint64): what two versions of a row are compared by.

    The digest is the sum over the row's non-null values of
    ``(value hash ^ column name seed) * P``; reserved ``__combe_`` columns are
    left out.
    """
    fields = _data_fields(table.schema)
    seeds = [name_seed(name) for _, name, _ in fields]
    out = np.empty(table.num_rows, _U64)

    def digest(span: tuple[int, int]) -> None:  # the rows of one span, into their own slice of ``out``
        part = table.slice(span[0], span[1] - span[0])
        batches = part.to_batches(max_chunksize=SLICE_ROWS) if isinstance(part, pa.Table) else [part]
        at = span[0]
        for batch in batches:
            for start in range(0, batch.num_rows, SLICE_ROWS):
                piece = batch.slice(start, SLICE_ROWS)
                hashed = (value_hashes(piece.column(i), type_) + (seed,) for (i, _, type_), seed in zip(fields, seeds))
                out[at:at + piece.num_rows] = _struct_sum(hashed, piece.num_rows)
                at += piece.num_rows

    each(digest, spans(table.num_rows, unit=SLICE_ROWS))
    return out


def digest_sum(digests: np.ndarray) -> int:
    """Sum of the rows' 128-bit hashes modulo 2^128; a row's hash is
    ``fmix64(digest ^ LANE_HI) << 64 | fmix64(digest ^ LANE_LO)``."""
    total = 0
    for lane, shift in ((LANE_LO, 0), (LANE_HI, 64)):
        halves = _fmix(digests ^ _U64(lane))
        # Summed in 32-bit halves so no carry is lost: below 2^32 rows each sum fits in 64 bits.
        low = int(np.sum(halves & _U64(0xFFFFFFFF), dtype=_U64))
        high = int(np.sum(halves >> _U64(32), dtype=_U64))
        total += (low + (high << 32)) << shift
    return total % MOD128


def format_checksum(total: int) -> str:
    return f"{PREFIX}{total % MOD128:032x}"


EMPTY_CHECKSUM = format_checksum(0)


def parse_checksum(text: str) -> int:
    """The sum an ``h128:`` checksum records; FormatError for anything else."""
    if not isinstance(text, str) or not text.startswith(PREFIX) or not _CHECKSUM.fullmatch(text):
        raise FormatError(f"state checksum {text!r:.80} is not of the form h128:<32 lowercase hex digits>")
    return int(text[len(PREFIX):], 16)


def is_checksum(text: object) -> bool:
    """Whether ``text`` is a state checksum of either scheme (for validating manifests)."""
    return isinstance(text, str) and _CHECKSUM.fullmatch(text) is not None


def state_checksum(table: pa.Table) -> str:
    """The ``h128:`` checksum of a state (a table of rows, any order)."""
    return format_checksum(digest_sum(row_digests(table)))


def advance(checksum: str, removed: np.ndarray, added: np.ndarray) -> str:
    """The checksum after rows with digests ``removed`` left the state and rows with digests ``added`` joined."""
    return format_checksum(parse_checksum(checksum) - digest_sum(removed) + digest_sum(added))


def checksum_of(table: pa.Table, like: str) -> str:
    """The checksum of ``table`` in the scheme of the recorded checksum ``like`` (h128, or sha256 for
    version 1 manifests, whose rows must be sorted by key as a state is)."""
    return legacy_state_checksum(table) if like.startswith(LEGACY_PREFIX) else state_checksum(table)


# -- format_version 1 ---------------------------------------------------------------------------------

_LEGACY_DOMAIN = b"combe-state-v1\n"


def _packed_bits(values: pa.Array) -> bytes:
    bits = values.to_numpy(zero_copy_only=False).astype(np.bool_)
    return np.packbits(bits, bitorder="little").tobytes()


def _legacy_column(type_: str, column: pa.Array, hasher: hashlib._Hash) -> None:
    hasher.update(_packed_bits(column.is_valid()))
    if type_ == "null":
        return
    if type_ == "bool":
        hasher.update(_packed_bits(column.fill_null(False)))
    elif type_ in ("int64", "float64"):
        hasher.update(column.fill_null(0).to_numpy(zero_copy_only=False).astype(
            "<i8" if type_ == "int64" else "<f8").tobytes())
    elif type_ in ("string", "json", "binary"):
        filled = column.fill_null(b"" if type_ == "binary" else "").cast(pa.large_binary())
        lengths = pc.binary_length(filled).to_numpy(zero_copy_only=False).astype("<i8")
        hasher.update(lengths.tobytes())
        offsets = np.frombuffer(filled.buffers()[1], dtype="<i8")[filled.offset:filled.offset + len(filled) + 1]
        data = filled.buffers()[2]
        if len(filled) and data is not None:
            hasher.update(memoryview(data)[int(offsets[0]):int(offsets[-1])])
    else:
        raise FormatError(f"format_version 1 has no type {type_}")


def legacy_state_checksum(table: pa.Table) -> str:
    """The ``sha256:`` checksum format_version 1 manifests record (rows in key order)."""
    hasher = hashlib.sha256(_LEGACY_DOMAIN)
    hasher.update(table.num_rows.to_bytes(8, "little"))
    for field in table.schema:
        if field.name.startswith(RESERVED_PREFIX):
            continue
        type_ = type_of_field(field)
        name = field.name.encode()
        hasher.update(len(name).to_bytes(4, "little") + name + type_.encode() + b"\n")
        _legacy_column(type_, table.column(field.name).combine_chunks(), hasher)
    return LEGACY_PREFIX + hasher.hexdigest()
