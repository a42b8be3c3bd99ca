"""Which shard a key belongs to: Kafka's default partitioner, so that a shard is a set of partitions.

A Kafka producer that is given a key and no partition picks
``(murmur2(key bytes) & 0x7fffffff) % partitions`` (the Java client's
``Utils.murmur2`` with seed 0x9747b28c; librdkafka's ``murmur2`` and
``murmur2_random`` partitioners compute the same, its default
``consistent_random`` does not). A sharded dataset with N shards puts a key
in shard ``(murmur2(key bytes) & 0x7fffffff) % N``. When N divides the
topic's partition count P, ``murmur2 % N == (murmur2 % P) % N``, so shard s
holds exactly the keys of the partitions p with ``p % N == s``: a producer
folds shard s by reading those partitions only, and file sources use the
same function.

A key's bytes: the UTF-8 of a string key; an int64 key is hashed as its
decimal text (ASCII digits, a leading ``-`` for negatives, no leading zeros),
which is what a Kafka producer with string keys sends for it. The hashing is
pure arithmetic on bytes, scalar for one lookup and vectorised with numpy for
a batch; both give the same values (tests/test_partition.py proves them
against a real broker).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConfigError

SEED = 0x9747B28C
M = 0x5BD1E995
R = 24
_MASK = 0xFFFFFFFF
MAX_SHARDS = 65536
# Keys longer than this are hashed one by one in Python in a batch: the vectorised loop takes one numpy
# step per 4 bytes of the longest key, which a rare long key would make slow for the whole batch.
_LONG_KEY = 256


def murmur2(data: bytes) -> int:
    """MurmurHash2 of ``data`` as Kafka computes it, as an unsigned 32-bit integer."""
    length = len(data)
    h = (SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * M) & _MASK
        k ^= k >> R
        k = (k * M) & _MASK
        h = ((h * M) & _MASK) ^ k
    tail = length % 4
    if tail:
        if tail == 3:
            h ^= data[whole + 2] << 16
        if tail >= 2:
            h ^= data[whole + 1] << 8
        h ^= data[whole]
        h = (h * M) & _MASK
    h ^= h >> 13
    h = (h * M) & _MASK
    h ^= h >> 15
    return h


def key_text(key: str | int, key_type: str) -> bytes:
    """The bytes a key is partitioned by: UTF-8 of a string key, the decimal text of an int64 key."""
    if key_type == "int64":
        return str(int(key)).encode("ascii")
    return str(key).encode("utf-8")


def partition_of(key: str | int, key_type: str, count: int) -> int:
    """The partition (or shard) of ``count`` that Kafka's default partitioner picks for ``key``."""
    return (murmur2(key_text(key, key_type)) & 0x7FFFFFFF) % count


def murmur2_many(keys: pa.Array) -> np.ndarray:
    """``murmur2`` of every value of a string or binary array (no nulls), vectorised; uint32."""
    binary = keys.cast(pa.large_binary())
    count = len(binary)
    offsets = np.frombuffer(binary.buffers()[1], dtype="<i8")[binary.offset:binary.offset + count + 1]
    buffer = binary.buffers()[2]
    data = np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    out = np.empty(count, np.uint32)
    long = np.flatnonzero(lengths > _LONG_KEY)
    for i in long.tolist():
        out[i] = murmur2(data[starts[i]:starts[i] + lengths[i]].tobytes())
    short = np.flatnonzero(lengths <= _LONG_KEY)
    if len(short):
        out[short] = _murmur2_short(data, starts[short], lengths[short])
    return out


def _murmur2_short(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """murmur2 of ``data[starts[i]:starts[i] + lengths[i]]`` for all i, one 4-byte word of every key per step.

    uint32 arithmetic wraps exactly as Java's int does. The keys are taken
    longest first, so the keys still hashing at step j are a prefix.
    """
    m = np.uint32(M)
    # Every 4 bytes from any position as one little-endian word: a strided view of a padded copy.
    padded = np.concatenate([data, np.zeros(4, np.uint8)])
    word_view = np.ndarray((len(data) + 1,), dtype="<u4", buffer=padded, offset=0, strides=(1,))
    words = lengths // 4
    order = np.argsort(-words, kind="stable")
    starts, lengths, words = starts[order], lengths[order], words[order]
    h = np.uint32(SEED) ^ lengths.astype(np.uint32)
    descending = -words
    for j in range(int(words[0]) if len(words) else 0):
        active = int(np.searchsorted(descending, -j, side="left"))
        k = word_view[starts[:active] + 4 * j] * m
        k ^= k >> np.uint32(R)
        k *= m
        h[:active] = (h[:active] * m) ^ k
    tail = (lengths % 4).astype(np.uint32)
    rows = np.flatnonzero(tail)
    if len(rows):
        last = word_view[starts[rows] + 4 * words[rows]] & ((np.uint32(1) << (8 * tail[rows])) - np.uint32(1))
        h[rows] = (h[rows] ^ last) * m
    h ^= h >> np.uint32(13)
    h *= m
    h ^= h >> np.uint32(15)
    out = np.empty(len(h), np.uint32)
    out[order] = h
    return out


def partitions_of(keys: pa.Array | pa.ChunkedArray, key_type: str, count: int) -> np.ndarray:
    """``partition_of`` for every key of an Arrow array (string, binary or int64; no nulls), as int64."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if key_type == "int64" and not (pa.types.is_string(keys.type) or pa.types.is_binary(keys.type)
                                    or pa.types.is_large_string(keys.type)):
        keys = pc.cast(keys, pa.string())  # decimal text, as str(int) writes it
    hashes = murmur2_many(keys).astype(np.int64) & 0x7FFFFFFF
    return hashes % count


def check_shard_count(count: object, where: str = "shard_count") -> int:
    """A shard count as given: a whole number from 1 to 65,536."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SHARDS:
        raise ConfigError(f"{where}={count!r}: give a whole number of shards from 1 to {MAX_SHARDS}")
    return count

