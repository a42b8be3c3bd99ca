"""Everything the scenarios measure against, built once per run.

For each key type, a changelog file and a local store with two versions of
the same dataset: version 1 (the base records) and version 2 (one per cent
of the keys updated, added or deleted). Both versions carry a snapshot
(``snapshot_every=1``) so that "load the full new snapshot" and "apply the
delta" can be compared on the same version. The string-key changelog is also
produced into a compacted topic on a real Kafka broker (tests/support's
KafkaBroker), and the state written as Parquet for the second baseline.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from itertools import chain
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.producer import PublishOptions, Publisher, RecordFormat, open_source
from tests.support.kafka_broker import KafkaBroker, create_topic

from . import data
from .kafka_topic import produce

log = logging.getLogger(__name__)

KEY_TYPES = ("string", "int64")
TOPIC = "products"
PARTITIONS = 3
# Compacted, but with ordinary segment sizes: the tests' tiny segments would keep the log
# cleaner busy on a second core while the replay is being timed.
TOPIC_CONFIG = {"segment.bytes": str(256 << 20), "segment.ms": str(7 * 86_400_000),
                "min.cleanable.dirty.ratio": "0.5"}


@dataclass(frozen=True)
class Mode:
    name: str
    records: int
    runs: int
    lookups: int  # keys per lookup run


# Quick mode is the suite's smoke test: three runs still give a median with a min and max beside it.
QUICK = Mode("quick", 20_000, 3, 20_000)
FULL = Mode("full", 1_000_000, 5, 200_000)


@dataclass
class Workspace:
    mode: Mode
    root: Path
    store: str
    bootstrap: str
    topic: str
    messages: int = 0  # in the topic
    datasets: dict[str, str] = field(default_factory=dict)  # key type -> dataset name
    changelogs: dict[str, Path] = field(default_factory=dict)  # key type -> JSONL file
    parquet: Path | None = None

    def dataset(self, key_type: str = "string") -> Dataset:
        return Dataset.open(self.store, self.datasets[key_type])

    def consumer(self, key_type: str = "string", **options: object) -> Consumer:
        return Consumer(self.store, self.datasets[key_type], **options)  # type: ignore[arg-type]


def publish(store: str, name: str, changelog: Path, key_type: str) -> int:
    """Fold the changelog file's new lines into a new version through the real publish cycle."""
    options = PublishOptions(fmt=RecordFormat(key_type=key_type), snapshot_every=1)
    with open_source(str(changelog)) as source:
        result = Publisher(Dataset.open(store, name), source, options).run_cycle()
    assert result.version is not None
    return result.version


def _build_dataset(workspace: Workspace, key_type: str) -> None:
    count = workspace.mode.records
    name = f"products-{key_type}"
    changelog = workspace.root / f"{name}.jsonl"
    data.write_jsonl(changelog, data.records(count, key_type))
    publish(workspace.store, name, changelog, key_type)
    data.write_jsonl(changelog, data.changes(count, key_type), append=True)
    publish(workspace.store, name, changelog, key_type)
    workspace.datasets[key_type] = name
    workspace.changelogs[key_type] = changelog


@contextmanager
def workspace(mode: Mode, root: Path | None = None, bootstrap: str | None = None) -> Iterator[Workspace]:
    """Build the data, the store and the topic, on the broker at ``bootstrap`` or on one started here; remove
    them (and stop that broker) afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="combe-bench-", dir=root))
    try:
        with ExitStack() as stack:
            if bootstrap is None:
                bootstrap = stack.enter_context(KafkaBroker()).bootstrap
            # A name of its own: a broker given by --bootstrap may hold an earlier run's topics, or a test's.
            topic = f"{TOPIC}-{uuid.uuid4().hex[:8]}"
            space = Workspace(mode, directory, str(directory / "store"), bootstrap, topic)
            for key_type in KEY_TYPES:
                log.info("publishing %d %s-key records, then a 1%% change", mode.records, key_type)
                _build_dataset(space, key_type)
            log.info("producing the changelog into the compacted topic %s", topic)
            create_topic(bootstrap, topic, partitions=PARTITIONS, compact=True, config=TOPIC_CONFIG)
            changes = data.changes(mode.records, "string")
            space.messages = produce(bootstrap, topic, chain(data.records(mode.records, "string"), changes))
            with space.consumer() as consumer:
                space.parquet = directory / "products.parquet"
                pq.write_table(consumer.view().table, space.parquet)
            yield space
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def sample_keys(ws: Workspace, key_type: str, count: int, seed: int = 5) -> list[str | int]:
    """``count`` keys present in the announced version, in a random order (repeats if the dataset is smaller)."""
    with ws.consumer(key_type) as consumer:
        keys = consumer.view().table.column(0)
        rows = np.random.default_rng(seed).integers(0, len(keys), size=count)
        return keys.take(pa.array(rows)).to_pylist()
