"""What every source gives the publish cycle: ordered records and where they came from.

A source reads from the positions the announced manifest recorded (the
truth for resuming) up to where it stood when the read began, and yields
chunks the cycle decodes in bulk (producer/decode.py): blocks of whole lines
from a file, batches of messages from Kafka.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

Positions = dict[str, dict[str, int]]

# The Kafka source's defaults, declared here where no Kafka client is imported, so the CLI can show them.
KAFKA_TIMEOUT = 15.0  # seconds an unreachable broker, a missing topic or a read with no data may take
REBUILD_MODES = ("never", "now", "auto")


class Lines(NamedTuple):
    """Whole lines of a file, as read: ``first_line`` is the number of the first, counted from where this read
    started (its first line is 1; Source.number gives the line in the file), ``position`` the byte offset
    after the last, where a resumed read starts."""

    stream: str
    data: bytes | bytearray
    first_line: int
    position: int


class Messages(NamedTuple):
    """Messages of one topic, in the order they were consumed (offset order within each partition): raw keys
    and values (None where absent), partitions and offsets; ``positions`` (partition -> next offset) is where
    the read stands after them (past control records, compacted gaps, empty partitions), and ``advanced``
    how many offsets that moved it by: what the manifest counts as messages, whatever the log cleaner
    removed in between or the client batched."""

    stream: str
    keys: list[bytes | None]
    values: list[bytes | None]
    partitions: np.ndarray
    offsets: np.ndarray
    positions: dict[str, int]
    advanced: int


class Rows(NamedTuple):
    """Rows of a whole state (``Source.whole_state``): an Arrow record batch or table whose columns are the
    key field and the value columns, or a list of dicts holding the same. ``first_row`` is the number of the
    first, counted from 1 for the read's first row."""

    stream: str
    rows: pa.RecordBatch | pa.Table | list[Any]
    first_row: int


class Records(NamedTuple):
    """Changes given as Python objects, in order: keys and values (a dict of columns; None deletes the key),
    numbered from ``first``."""

    stream: str
    keys: list[Any]
    values: list[Any]
    first: int


Chunk = Lines | Messages | Rows | Records


class Source(ABC):
    """Keyed records for the publish cycle: a changelog (a null value deletes the key), or a whole state.

    A new kind of source subclasses this: ``read`` and ``describe`` are required, the rest have defaults.
    A changelog source resumes from the positions the announced version recorded (``read(positions)``);
    a whole-state source (``whole_state = True``) is read from its start every cycle, yields ``Rows``
    (or ``Lines`` of JSON objects) holding each key once, and the keys the announced state has but it
    lacks are deleted.
    """

    uri: str
    # Lines of a file source: None for JSONL lines (key and value inside), else the kcat key delimiter.
    delimiter: bytes | None = None
    # True for Kafka topics: only the latest record per key in a cycle needs decoding
    # (a superseded record is what the log cleaner removes anyway). See Publisher._collect.
    latest_only: bool = False
    # Said with "the record has no key", where a source knows a likelier cause.
    no_key_hint: str = ""
    # True when the source reads one shard's records only (Kafka: the partitions of the shard), so a record
    # whose key belongs to another shard is a bad record; otherwise a shard's cycle passes over other shards'
    # records (a file holds every shard's). See Decode.
    holds_shard: bool = False
    # True when each read is the whole state rather than changes: see producer/whole.py.
    whole_state: bool = False

    @abstractmethod
    def read(self, positions: Positions) -> Iterator[Chunk]:
        """Records after ``positions``, up to the end as seen when the read started."""

    @abstractmethod
    def describe(self, stream: str, partition: int, offset: int) -> str:
        """Where a record is, in the words a user needs to find it (``offset`` as ``number`` gives it)."""

    def number(self, stream: str, partition: int, offset: int) -> int:
        """The offset of a record as the source numbers it, from the one a chunk gave (the same but for
        files, whose chunks count lines from where the read started)."""
        return offset

    def rebuild_needed(self, positions: Positions, recorded_at: datetime) -> bool:
        """True when this cycle must re-read everything instead of resuming from ``positions`` (which the
        announced version recorded at ``recorded_at``): the cycle then folds the whole source and publishes
        the difference. Raises SourceError when resuming is unsafe and rebuilding was not allowed."""
        return False

    def lag(self) -> int | None:
        """Messages still to read in the current read, when the source knows (for progress lines)."""
        return None

    def commit(self, positions: Positions) -> None:
        """Told the positions of a version once it is announced (Kafka: lag monitoring)."""

    def close(self) -> None:
        """Release connections and files."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
