"""Whole-state publish: ``combe.publish_state`` against finding the changes in Python, as a job would without it.

A job that holds its whole state and has only a changelog publisher must
find the changes itself: read the announced state, compare it with the new
one row by row (dicts), and publish the puts and deletes
(``IncrementalPublisher``). ``publish_state`` does that columnar inside the
cycle. Both start from a store at the workspace's version 1 and publish
version 2's state (one per cent of the keys updated, added or deleted), back
to back in each run; throughput is the new state's records over the seconds.
"""

from __future__ import annotations

from functools import partial

import pyarrow as pa

from combe import Consumer, IncrementalPublisher, publish_state
from combe.producer.state import load_state

from ..stats import Figure, ratio, timed
from ..workspace import Workspace

NAME = "state"


def python_diff(store: str, new: pa.Table, key: str) -> None:
    """What a job does without publish_state: the announced state and the new one as dicts, compared."""
    with Consumer(store, NAME) as consumer:
        old = {row.pop(key): row for row in consumer.view().table.to_pylist()}
    given = {row.pop(key): row for row in new.to_pylist()}
    with IncrementalPublisher(store, NAME, key=key) as publisher:
        for name, row in given.items():
            if old.get(name) != row:
                publisher.put(name, row)
        for name in old.keys() - given.keys():
            publisher.delete(name)


def run(ws: Workspace) -> list[Figure]:
    dataset = ws.dataset("string")
    old = load_state(dataset, dataset.manifest(1)).table()
    with ws.consumer("string") as consumer:
        new, key = consumer.view().table, consumer.view().schema.key_field
    combe = Figure("whole_state_publish_records_per_s", "rec/s", [],
                   f"publish_state of a {new.num_rows:,}-record state, 1% changed from the announced one")
    diff = Figure("python_diff_publish_records_per_s", "rec/s", [],
                  "the same state: the announced one read, compared as dicts, changes published")
    for run in range(ws.mode.runs):
        ours, theirs = (str(ws.root / f"whole-state-{run}-{side}") for side in ("combe", "diff"))
        for store in (ours, theirs):
            publish_state(store, NAME, old, key=key)
        seconds, _ = timed(partial(publish_state, ours, NAME, new, key=key))
        combe.values.append(new.num_rows / seconds)
        seconds, _ = timed(partial(python_diff, theirs, new, key))
        diff.values.append(new.num_rows / seconds)
    return [combe, diff, ratio("whole_state_speedup_vs_python_diff", combe, diff)]
