"""Sources that are Python objects: a whole state given as data, and changes given one call at a time.

``StateData`` (``combe.publish_state``) reads an iterable of dicts, a pyarrow
Table, RecordBatch or RecordBatchReader, or a pandas or polars DataFrame as
record batches (dicts in lists of ``BATCH_ROWS``); pandas and polars are
never imported here: an object of theirs converts itself to Arrow.
``PendingChanges`` holds the puts and deletes given to an
``IncrementalPublisher`` until it publishes them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

import pyarrow as pa

from combe.format.errors import ConfigError, SourceError
from combe.format.keys import key_fields

from .base import Positions, Records, Rows, Source
from .tables import BATCH_ROWS

GIVE = ("give an iterable of dicts, a pyarrow Table, RecordBatch or RecordBatchReader, or a pandas or polars "
        "DataFrame")


def _module(data: Any) -> str:
    return type(data).__module__.split(".")[0]


def dataframe_table(data: Any, key_columns: Collection[str]) -> pa.Table | None:
    """A pandas or polars DataFrame as a pyarrow Table (a pandas index whose levels are named like the key's
    columns, ``key`` or ``tenant`` and ``id``, becomes columns); None for anything else."""
    if _module(data) == "pandas":
        if any(name in key_columns and name not in data.columns for name in data.index.names):
            data = data.reset_index()
        table: pa.Table = pa.Table.from_pandas(data, preserve_index=False)
        return table
    if _module(data) == "polars":
        table = data.to_arrow()
        return table
    return None


class StateData(Source):
    """A whole state given as Python data; ``key_field`` names the key column (``key_type``: a compound key's
    fields may be columns instead)."""

    uri = "python:publish_state"
    whole_state = True

    def __init__(self, data: Any, key_field: str, key_type: str = "string") -> None:
        arrow = (pa.Table, pa.RecordBatch, pa.RecordBatchReader)
        if isinstance(data, (str, bytes, Mapping)) or not (isinstance(data, (Iterable, *arrow))
                                                         or _module(data) in ("pandas", "polars")):
            raise ConfigError(f"cannot publish a {type(data).__name__} as a whole state: {GIVE}, each row holding "
                              f"its key in the {key_field!r} field")
        self.data = data
        self.key_field = key_field
        self.key_columns = [key_field, *(name for name, _ in key_fields(key_type))]
        self.stream = "data"
        self.no_key_hint = f"the row's {key_field!r} field is null"

    def describe(self, stream: str, partition: int, offset: int) -> str:
        return f"row {offset} of the data given to publish_state"

    def read(self, positions: Positions) -> Iterator[Rows]:
        first = 1
        try:
            for rows in self._chunks():
                if len(rows):
                    yield Rows(self.stream, rows, first)
                    first += len(rows)
        except (pa.ArrowException, OverflowError) as exc:
            raise SourceError(f"the data given to publish_state does not convert to Arrow near row {first}: "
                              f"{exc}", source=self.uri) from exc

    def _chunks(self) -> Iterator[pa.RecordBatch | pa.Table | list[Any]]:
        data = dataframe_table(self.data, self.key_columns)
        if data is None:
            data = self.data
        if isinstance(data, pa.Table):
            yield from data.to_batches(max_chunksize=BATCH_ROWS)
        elif isinstance(data, (pa.RecordBatch, pa.RecordBatchReader)):
            yield from data if isinstance(data, pa.RecordBatchReader) else [data]
        else:
            rows = iter(data)
            while chunk := list(islice(rows, BATCH_ROWS)):
                yield chunk


class PendingChanges(Source):
    """Puts and deletes given from Python, in order, until they are published (then ``clear``)."""

    uri = "python:IncrementalPublisher"

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.values: list[dict[str, Any] | None] = []

    def add(self, key: Any, value: dict[str, Any] | None) -> None:
        self.keys.append(key)
        self.values.append(value)

    def clear(self) -> None:
        self.keys, self.values = [], []

    def describe(self, stream: str, partition: int, offset: int) -> str:
        key = self.keys[offset - 1] if 0 < offset <= len(self.keys) else "?"
        return f"change {offset} given to the IncrementalPublisher (key {key!r})"

    def read(self, positions: Positions) -> Iterator[Records]:
        if self.keys:
            yield Records("changes", self.keys, self.values, 1)
