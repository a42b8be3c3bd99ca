"""What every source gives the publish cycle: ordered records and where they came from.

A source reads from the positions the announced manifest recorded (the
truth for resuming) up to where it stood when the read began, and yields
batches so that the per-record Python work stays in one tight loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, NamedTuple

Positions = dict[str, dict[str, int]]


class Record(NamedTuple):
    """One input record. ``offset`` is what an error message shows (a Kafka offset, a
    file line); ``next_offset`` is what the manifest stores to resume after it."""

    key: Any
    value: Any
    partition: int
    offset: int
    next_offset: int


class Batch(NamedTuple):
    stream: str
    records: list[Record]


class Source(ABC):
    """A changelog of keyed records; a null value deletes the key."""

    uri: str
    # True when each record is a whole JSONL line (key and value inside), not raw key/value bytes.
    jsonl: bool = False
    # Said with "the record has no key", where a source knows a likelier cause.
    no_key_hint: str = ""

    @abstractmethod
    def read(self, positions: Positions) -> Iterator[Batch]:
        """Records after ``positions``, up to the end as seen when the read started."""

    @abstractmethod
    def describe(self, stream: str, partition: int, offset: int) -> str:
        """Where a record is, in the words a user needs to find it."""

    def commit(self, positions: Positions) -> None:
        """Told the positions of a version once it is announced (Kafka: lag monitoring)."""

    def close(self) -> None:
        """Release connections and files."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
