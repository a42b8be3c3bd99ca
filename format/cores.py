"""Work spread over the machine's cores, on threads of one process.

numpy's and Arrow's loops, zstd and xxhash release the GIL while they run,
so a vectorised pass cut into one part per core runs on every core at once.
Each part must write only to places of its own (its slice of an output
array, its own list entry); nothing else is shared.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

CORES = os.cpu_count() or 1
# A pass over fewer rows than this is not cut: starting threads would cost more than the second core saves.
LEAST_ROWS = 1 << 16

T = TypeVar("T")
R = TypeVar("R")


def each(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``work(item)`` for every item, on up to CORES threads at once; the results in the items' order.

    The first item's exception (in the items' order) is raised once every thread has stopped.
    """
    if len(items) <= 1 or CORES == 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(min(CORES, len(items)), thread_name_prefix="combe-cores") as pool:
        return list(pool.map(work, items))


def spans(count: int, *, unit: int = 1) -> list[tuple[int, int]]:
    """``range(count)`` as up to CORES consecutive (start, stop) spans, each starting at a multiple of ``unit``;
    one span when ``count`` is below LEAST_ROWS."""
    if count < LEAST_ROWS or CORES == 1:
        return [(0, count)]
    units = -(-count // unit)
    step = -(-units // CORES) * unit
    return [(start, min(start + step, count)) for start in range(0, count, step)]


__all__ = ["CORES", "LEAST_ROWS", "each", "spans"]
