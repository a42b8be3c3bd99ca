"""Key order: strings by UTF-8 bytes, integers by value, equal keys in the order they came (stable)."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from combe.format.keyorder import MAX_WORDS, key_order

# Short texts that share prefixes, end in zero bytes, and leave the ASCII range.
PIECES = st.sampled_from(["", "a", "ab", "\0", "\x7f", "é", "\U0001f600", "sku-00", "zz"])
TEXTS = st.lists(PIECES, max_size=12).map("".join)


def expected(keys: list[bytes]) -> list[int]:
    return sorted(range(len(keys)), key=lambda i: (keys[i], i))


@settings(deadline=None)  # a loaded machine takes longer than hypothesis's 200 ms to call Arrow first
@given(st.lists(TEXTS, max_size=60))
def test_string_keys_sort_by_their_utf8_bytes_and_stably(texts: list[str]) -> None:
    order = key_order(pa.array(texts, pa.string()))
    assert order.tolist() == expected([text.encode() for text in texts])


@settings(deadline=None)
@given(st.lists(st.binary(max_size=8 * MAX_WORDS + 9), max_size=40), st.integers(0, 5))
def test_binary_keys_of_any_length_sort_by_their_bytes_and_stably(keys: list[bytes], skip: int) -> None:
    """Keys longer than MAX_WORDS words go to Arrow's string sort; a slice of an array keeps its offsets."""
    array = pa.array([b"x"] * skip + keys, pa.binary()).slice(skip)
    assert key_order(array).tolist() == expected(keys)
    assert key_order(pa.chunked_array([array[:len(keys) // 2], array[len(keys) // 2:]], pa.binary())).tolist() \
        == expected(keys)


@settings(deadline=None)
@given(st.lists(st.integers(-2**63, 2**63 - 1) | st.sampled_from([0, -1, 7]), max_size=60))
def test_int64_keys_sort_by_value_and_stably(keys: list[int]) -> None:
    assert key_order(pa.array(keys, pa.int64())).tolist() == sorted(range(len(keys)), key=lambda i: (keys[i], i))


@settings(deadline=None)
@given(st.lists(st.integers(0, 10**9 - 1), max_size=60), st.sampled_from(["sku-", "", "\0", "é-"]),
       st.integers(1, 12))
def test_keys_of_one_length_with_a_shared_prefix_sort_by_their_bytes_and_stably(numbers: list[int], prefix: str,
                                                                                width: int) -> None:
    """Catalogue keys (``sku-000000042``): the bytes every key shares and the length they all have are left
    out of the sort, what remains may fit one word; duplicates keep their order."""
    texts = [f"{prefix}{n % 10**width:0{width}d}" for n in numbers + numbers[::3]]
    order = key_order(pa.array(texts, pa.string()))
    assert order.tolist() == expected([text.encode() for text in texts])


def test_a_long_shared_prefix_leaves_the_words_that_differ() -> None:
    """Keys longer than MAX_WORDS words whose differing bytes fit in them sort as words all the same."""
    shared = "tenant/" + "x" * (8 * MAX_WORDS)
    texts = [f"{shared}/{n}" for n in (5, 12, 3, 12, 100, 7)]
    assert key_order(pa.array(texts, pa.string())).tolist() == expected([text.encode() for text in texts])
