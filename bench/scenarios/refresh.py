"""Refresh: moving a running consumer to the next version, and what readers feel meanwhile.

Version 2 changes one per cent of the keys. A consumer pinned at version 1
is unpinned and refreshes to version 2 by its delta; that is compared with
loading version 2's full snapshot in a fresh consumer, which is what any
snapshot-only scheme (or a restart) costs.

Reader latency: a thread calls ``get`` back to back on random keys while the
main thread refreshes. The p99 of the lookups that overlapped the refresh is
compared with the p99 over an idle spell of the same length on the same
consumer. Both threads share the GIL, so this shows how much the refresh's
Python work stalls readers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..stats import Figure, percentile, ratio, timed
from ..workspace import Workspace, sample_keys

MIN_WINDOW = 0.05  # seconds; an idle window shorter than this holds too few gets for a p99
READER_DEADLINE = 60.0  # seconds a reader may take to complete one get on a loaded machine


def overlapping_latencies(get: Callable[[Any], Any], keys: Sequence[Any],
                          action: Callable[[], None]) -> list[float]:
    """What a reader calling ``get`` back to back waits per lookup while ``action`` runs.

    A sample is the time between two consecutive completed gets, so a stall
    of the reader thread between two calls (waiting for the GIL) counts as
    much as one inside a call: a request arriving then would wait just as
    long. Samples whose span overlaps ``action`` are returned, in seconds.
    """
    done: list[float] = []
    stop = threading.Event()
    started = threading.Event()  # the reader has completed a get: it is in its loop
    end = float("inf")
    finished = threading.Event()  # the reader has completed a get after the action ended

    def reader() -> None:
        clock = time.perf_counter
        append = done.append
        i = 0
        append(clock())
        while not stop.is_set():
            get(keys[i % len(keys)])
            i += 1
            now = clock()
            append(now)
            if i == 1:
                started.set()
            elif now > end and not finished.is_set():  # an Event's set takes a lock: once, not per get
                finished.set()

    thread = threading.Thread(target=reader, name="bench-reader")
    thread.start()
    try:
        if not started.wait(READER_DEADLINE):
            raise RuntimeError(f"the reader thread completed no get within {READER_DEADLINE} s")
        start = time.perf_counter()
        action()
        end = time.perf_counter()
        if not finished.wait(READER_DEADLINE):
            raise RuntimeError(f"the reader thread completed no get within {READER_DEADLINE} s of the action")
    finally:
        stop.set()
        thread.join()
    return [after - before for before, after in zip(done, done[1:]) if before < end and after > start]


def run(ws: Workspace) -> list[Figure]:
    keys = sample_keys(ws, "string", 10_000)
    delta = Figure("delta_refresh_s", "s", [], "refresh of a running consumer from version 1 to 2 by the delta")
    full = Figure("full_snapshot_load_s", "s", [], "fresh Consumer() loading version 2's snapshot")
    busy = Figure("get_p99_during_refresh_us", "us", [], "reader get p99 while the consumer refreshes by delta")
    idle = Figure("get_p99_idle_us", "us", [], "reader get p99 over an idle spell as long as the refresh")
    for _ in range(ws.mode.runs):
        with ws.consumer(pin=1) as consumer:
            seconds, _ = timed(lambda: consumer.set_pin(None))
            view = consumer.view()
            if view.version != 2 or view.deltas_applied != 1:
                raise AssertionError(f"expected version 2 by one delta, got {view!r} ({view.deltas_applied} deltas)")
            delta.values.append(seconds)
        seconds, fresh = timed(ws.consumer)
        full.values.append(seconds)
        fresh.close()
        del fresh
        with ws.consumer(pin=1) as consumer:
            window: list[float] = []

            def refresh() -> None:
                started = time.perf_counter()
                consumer.set_pin(None)
                window.append(time.perf_counter() - started)  # noqa: B023 - runs within this iteration

            busy.values.append(percentile(overlapping_latencies(consumer.get, keys, refresh), 0.99) * 1e6)
            spell = max(window[0], MIN_WINDOW)
            idle.values.append(percentile(overlapping_latencies(consumer.get, keys, lambda: time.sleep(spell)),  # noqa: B023
                                          0.99) * 1e6)
    return [
        delta, full,
        ratio("delta_refresh_fraction_of_full", delta, full, goal=("<=", 0.10)),
        idle, busy,
        ratio("get_p99_refresh_over_idle", busy, idle),
    ]
