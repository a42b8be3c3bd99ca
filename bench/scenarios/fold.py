"""The producer's fold against a bare confluent-kafka consume loop over the same topic.

The fold is one whole publish cycle into an empty store (read every
partition, decode the JSON values, fold, write the snapshot, check it,
announce), as ``combe publish --once`` runs it; its rate is messages read
over those seconds. The bare loop fetches every message and touches its key
and value. The two run back to back, run after run, on the same broker, with
the same client settings.
"""

from __future__ import annotations

import shutil

from combe.format.dataset import Dataset
from combe.producer import PublishOptions, Publisher, open_source

from ..kafka_topic import CLIENT_SETTINGS, raw_consume
from ..stats import Figure, ratio, timed
from ..workspace import Workspace


def fold_topic(ws: Workspace, store: str) -> int:
    """Publish the topic into a new dataset in one cycle; the messages it read."""
    name = "folded"
    with open_source(f"kafka://{ws.bootstrap}/{ws.topic}", dataset=name, client_config=CLIENT_SETTINGS) as source:
        result = Publisher(Dataset.open(store, name), source, PublishOptions()).run_cycle()
    return result.messages


def run(ws: Workspace) -> list[Figure]:
    fold = Figure("fold_messages_per_s", "msg/s", [], "publish cycle from the topic into an empty store")
    raw = Figure("raw_consume_messages_per_s", "msg/s", [], "bare confluent-kafka consume loop")
    for attempt in range(ws.mode.runs):
        seconds, count = timed(lambda: raw_consume(ws.bootstrap, ws.topic))
        raw.values.append(count / seconds)
        store = ws.root / f"fold-{attempt}"
        seconds, count = timed(lambda: fold_topic(ws, str(store)))
        shutil.rmtree(store)
        if count != ws.messages:
            raise AssertionError(f"the fold read {count} messages, the topic holds {ws.messages}")
        fold.values.append(count / seconds)
    return [fold, raw, ratio("fold_fraction_of_raw_consume", fold, raw, goal=(">=", 0.60))]
