"""The producer's fold against a bare confluent-kafka consume loop, on the benchmark's topic.

The measuring is bench/kafka_fold.py's (one whole publish cycle into an
empty store against the bare loop, pair by pair, same client settings); this
runs it on the topic the cold-start replay reads, so every figure comes from
one dataset.
"""

from __future__ import annotations

from ..kafka_fold import compare
from ..stats import Figure, ratio
from ..workspace import Workspace


def run(ws: Workspace) -> list[Figure]:
    found = compare(ws.bootstrap, ws.topic, ws.messages, ws.mode.runs, ws.root)
    fold = Figure("fold_messages_per_s", "msg/s", found.fold, "one publish cycle from the topic into an empty store")
    read = Figure("fold_read_phase_messages_per_s", "msg/s", found.fold_read,
                  "the same cycle until its read ended (decode and collect, before fold and write)")
    raw = Figure("raw_consume_messages_per_s", "msg/s", found.raw, "bare confluent-kafka consume loop")
    return [fold, read, raw, ratio("fold_fraction_of_raw_consume", fold, raw, goal=(">=", 0.60)),
            ratio("fold_read_phase_fraction_of_raw_consume", read, raw)]
