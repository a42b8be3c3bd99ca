"""The order of keys in snapshots and deltas (docs/FORMAT.md): strings by their UTF-8 bytes, integers by value.

Arrow sorts a string array by comparing the strings, which costs several
times what its sort of integer columns costs (a radix sort on the first
column, ties broken by the next). So string keys are sorted as integers: the
first ``MAX_WORDS`` 8-byte words of each key after the bytes every key
shares (those of the least and greatest key), read big-endian and padded
with zero bytes, then the key's length (a key that is a prefix of another,
or that differs from it only by trailing zero bytes, comes first) unless
every key has the same length. Keys of one word sort as one integer column
(``sku-000000042`` keys: the shared ``sku-000`` left, six bytes). Longer
keys go to Arrow's string sort. Every sort is stable, so equal keys keep
the order they came in (the fold relies on it: the last one is the latest).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .index import one_array

# Keys up to this many 8-byte words long are sorted as words.
MAX_WORDS = 8
# _PREFIX_MASK[r]: the first r bytes of a big-endian word.
_PREFIX_MASK = np.array([(~((1 << (8 * (8 - r))) - 1)) & 0xFFFFFFFFFFFFFFFF for r in range(8)], np.uint64)


def key_order(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The indices that sort ``keys`` (no nulls) in key order, stably."""
    keys = one_array(keys)
    if not (pa.types.is_string(keys.type) or pa.types.is_binary(keys.type)):
        return pc.sort_indices(keys).to_numpy()
    words = _words(keys.cast(pa.large_binary()))
    if words is None:
        return pc.sort_indices(keys).to_numpy()
    if len(words) == 1:
        return np.argsort(words[0], kind="stable")
    names = [f"w{i}" for i in range(len(words))]
    table = pa.table(dict(zip(names, words)))
    return pc.sort_indices(table, sort_keys=[(name, "ascending") for name in names]).to_numpy()


def _common_prefix(keys: pa.Array) -> int:
    """How many leading bytes every key shares: those of the least and the greatest key."""
    if len(keys) < 2:
        return 0
    least, greatest = (bytes(v.as_py()) for v in pc.min_max(keys).values())
    length = min(len(least), len(greatest))
    differ = np.flatnonzero(np.frombuffer(least[:length], np.uint8) != np.frombuffer(greatest[:length], np.uint8))
    return int(differ[0]) if len(differ) else length


def _words(keys: pa.Array) -> list[np.ndarray] | None:
    """Each key's first words after the bytes all keys share, as big-endian integers, then its length unless
    every key has the same; None if a key is longer than MAX_WORDS words after them."""
    offsets = np.frombuffer(keys.buffers()[1], "<i8")[keys.offset:keys.offset + len(keys) + 1]
    lengths = np.diff(offsets)
    shared = _common_prefix(keys)
    lengths = lengths - shared
    longest = int(lengths.max()) if len(lengths) else 0
    count = -(-longest // 8)
    if count > MAX_WORDS:
        return None
    start, end = (int(offsets[0]), int(offsets[-1])) if len(offsets) else (0, 0)
    padded = np.zeros(end - start + 8, np.uint8)
    data = keys.buffers()[2]
    if data is not None and end > start:
        padded[:end - start] = np.frombuffer(data, np.uint8, end - start, start)
    # Every byte position as the start of a big-endian word (an unaligned, overlapping view).
    view = np.ndarray((end - start + 1,), dtype=">u8", buffer=padded, strides=(1,))
    starts = offsets[:-1] - start + shared
    words = []
    for k in range(count):
        left = lengths - 8 * k
        word = view[np.minimum(starts + 8 * k, end - start)].astype(np.uint64)
        word &= np.where(left >= 8, np.uint64(0xFFFFFFFFFFFFFFFF), _PREFIX_MASK[np.clip(left, 0, 7)])
        words.append(word)
    same_length = not len(lengths) or int(lengths.min()) == longest
    return words if same_length and words else [*words, lengths]
