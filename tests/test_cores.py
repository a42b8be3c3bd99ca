"""format/cores.py: work cut into spans and run on threads, results in order, errors raised."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest

from combe.format import cores
from combe.format.checksum import SLICE_ROWS, row_digests
from combe.format.cores import LEAST_ROWS, each, spans


@pytest.mark.parametrize("count, unit", [(0, 1), (LEAST_ROWS - 1, 1), (LEAST_ROWS, 1), (LEAST_ROWS * 3 + 7, 1),
                                         (LEAST_ROWS * 2 + 5, SLICE_ROWS), (10**6, 4096)])
@pytest.mark.parametrize("count_cores", [1, 2, 3])
def test_spans_cover_the_range_once_in_order_at_whole_units(monkeypatch: pytest.MonkeyPatch, count: int,
                                                             unit: int, count_cores: int) -> None:
    monkeypatch.setattr(cores, "CORES", count_cores)
    found = spans(count, unit=unit)
    assert found[0][0] == 0 and found[-1][1] == count
    assert all(stop == start for (_, stop), (start, _) in zip(found, found[1:]))
    assert all(start % unit == 0 and start < stop for start, stop in found[1:])
    assert len(found) <= count_cores
    assert len(found) == 1 or count >= LEAST_ROWS  # a small pass is never cut


def test_each_keeps_the_items_order_and_runs_on_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores, "CORES", 2)
    both = threading.Barrier(2, timeout=10)  # passes only if two items run at the same time

    def work(item: int) -> int:
        if item < 2:
            both.wait()
        return item * 10

    assert each(work, range(5)) == [0, 10, 20, 30, 40]


def test_each_raises_the_first_items_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores, "CORES", 2)

    def work(item: int) -> int:
        if item in (1, 3):
            raise ValueError(f"item {item}")
        return item

    with pytest.raises(ValueError, match="item 1"):
        each(work, range(4))


def test_row_digests_are_the_same_whatever_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    count = 3 * SLICE_ROWS + 123
    rng = np.random.default_rng(7)
    table = pa.table({"key": [f"k{i}" for i in range(count)], "n": rng.integers(-9, 9, count),
                      "tags": [["x" * (i % 5)] * (i % 3) for i in range(count)]})
    # chunks whose boundaries are not where the spans cut
    chunked = pa.concat_tables([table.slice(0, 1000), table.slice(1000, 50_000), table.slice(51_000)])
    monkeypatch.setattr(cores, "CORES", 1)
    alone = row_digests(chunked)
    for count_cores in (2, 3):
        monkeypatch.setattr(cores, "CORES", count_cores)
        assert np.array_equal(row_digests(chunked), alone)
        assert np.array_equal(row_digests(table.slice(5, count - 10)), alone[5:count - 5])
