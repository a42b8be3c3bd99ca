"""The shard of a key is Kafka's default partitioner: proved against the Java client's vectors and a real broker."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from combe.format.errors import ConfigError
from combe.format.partition import check_shard_count, key_text, murmur2, murmur2_many, partition_of, partitions_of
from tests.support.kafka_data import unique


def _signed(value: int) -> int:
    return value - 2**32 if value >= 2**31 else value


@pytest.mark.parametrize(("data", "expected"), [
    # Kafka's own test vectors for Utils.murmur2 (signed Java ints), and librdkafka's.
    (b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971), (b"abc", 479470107),
    (b"kafka", _signed(0xD067CF64)), (b"", _signed(0x106E08D9)),
])
def test_murmur2_matches_kafkas_vectors(data: bytes, expected: int) -> None:
    assert _signed(murmur2(data)) == expected
    assert _signed(int(murmur2_many(pa.array([data], pa.binary()))[0])) == expected


def test_vectorised_equals_scalar_on_random_bytes() -> None:
    rng = random.Random(7)
    # Every tail length, empty keys, and keys past the vectorised path's length limit.
    keys = [bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 3, 4, 5, 11, 64, 255, 256, 257, 900])))
            for _ in range(2000)]
    assert murmur2_many(pa.array(keys, pa.binary())).tolist() == [murmur2(k) for k in keys]
    # A sliced array: offsets that do not start at 0.
    sliced = pa.array(keys, pa.binary()).slice(37, 500)
    assert murmur2_many(sliced).tolist() == [murmur2(k) for k in keys[37:537]]
    assert murmur2_many(pa.array([], pa.binary())).tolist() == []


def test_string_and_int64_keys() -> None:
    words = ["", "é", "日本語のキー", "a" * 300, *(f"user-{i}" for i in range(500))]
    assert partitions_of(pa.array(words), "string", 16).tolist() == [partition_of(w, "string", 16) for w in words]
    assert key_text("é", "string") == "é".encode()
    numbers = [0, 7, -7, 10**18, 2**63 - 1, -(2**63), *range(-300, 300, 7)]
    assert key_text(-42, "int64") == b"-42"
    expected = [(murmur2(str(n).encode()) & 0x7FFFFFFF) % 12 for n in numbers]
    assert partitions_of(pa.array(numbers, pa.int64()), "int64", 12).tolist() == expected
    assert [partition_of(n, "int64", 12) for n in numbers] == expected
    chunked = pa.chunked_array([words[:100], words[100:]])
    assert np.array_equal(partitions_of(chunked, "string", 5), partitions_of(pa.array(words), "string", 5))


@pytest.mark.parametrize("count", [0, -1, 65537, 2.0, True, "4"])
def test_shard_count_is_checked(count: object) -> None:
    with pytest.raises(ConfigError, match="whole number of shards"):
        check_shard_count(count)


def test_partitions_of_a_real_broker(kafka_broker) -> None:  # type: ignore[no-untyped-def]
    """Keys produced with librdkafka's murmur2_random partitioner land where partition_of says."""
    from confluent_kafka import Producer

    topic = unique("partitioner")
    kafka_broker.create_topic(topic, partitions=16, compact=False)
    rng = random.Random(3)
    keys = [f"k{i}" for i in range(400)] + ["", "é", "日本語", "x" * 1000] + \
        ["".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(1, 40))) for _ in range(300)] + \
        [str(n) for n in (0, -1, 2**63 - 1, -(2**63), *(rng.randrange(-10**12, 10**12) for _ in range(200)))]
    landed: dict[str, int] = {}
    errors: list[object] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            errors.append(error)
        else:
            landed[message.key().decode()] = message.partition()  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "partitioner": "murmur2_random"})
    for key in keys:
        producer.produce(topic, key=key.encode(), value=b"{}", on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors, errors
    assert len(landed) == len(set(keys))
    assert {key: partition_of(key, "string", 16) for key in landed} == landed
    assert partitions_of(pa.array(list(landed)), "string", 16).tolist() == list(landed.values())
    numbers = [int(k) for k in landed if k.lstrip("-").isdigit() and k == str(int(k))]
    assert len(numbers) > 200
    assert [partition_of(n, "int64", 16) for n in numbers] == [landed[str(n)] for n in numbers]
    assert len(set(landed.values())) == 16  # every partition was used, so no modulo slip hides
