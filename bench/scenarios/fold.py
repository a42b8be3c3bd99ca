"""The producer's fold against a bare confluent-kafka consume loop, on topics with distinct and repeated keys.

The measuring is bench/kafka_fold.py's (one whole publish cycle into an
empty store against the bare loop, pair by pair, same client settings). Two
topics of the same number of messages: the one the cold-start replay reads
(every key distinct but the 1% change's), and one of kafka_fold.py's, where
each key comes about four times and 5% of the messages are tombstones. The
producer decodes only a key's latest record, so the two can differ a lot;
issue 11 asks for both.
"""

from __future__ import annotations

from ..kafka_fold import GOAL, Comparison, compare, produce_topic
from ..stats import Figure, ratio
from ..workspace import Workspace


def figures(found: Comparison, keys: str, what: str) -> list[Figure]:
    fold = Figure(f"fold_messages_per_s_{keys}", "msg/s", found.fold,
                  f"one publish cycle from the topic into an empty store, {what}")
    read = Figure(f"fold_read_phase_messages_per_s_{keys}", "msg/s", found.fold_read,
                  "the same cycle until its read ended (decode and collect, before fold and write)")
    raw = Figure(f"raw_consume_messages_per_s_{keys}", "msg/s", found.raw, f"bare confluent-kafka consume loop, {what}")
    return [fold, read, raw, ratio(f"fold_fraction_of_raw_consume_{keys}", fold, raw, goal=(">=", GOAL)),
            ratio(f"fold_read_phase_fraction_of_raw_consume_{keys}", read, raw)]


def run(ws: Workspace) -> list[Figure]:
    distinct = compare(ws.bootstrap, ws.topic, ws.messages, ws.mode.runs, ws.root)
    repeated_topic = f"{ws.topic}-repeated-keys"
    produce_topic(ws.bootstrap, repeated_topic, ws.messages)
    repeated = compare(ws.bootstrap, repeated_topic, ws.messages, ws.mode.runs, ws.root)
    return (figures(distinct, "distinct", f"{ws.messages:,} messages, distinct keys")
            + figures(repeated, "repeated", f"{ws.messages:,} messages over {ws.messages // 4:,} keys, "
                                            "5% tombstones"))
