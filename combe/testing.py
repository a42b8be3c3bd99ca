"""combe.testing: a dataset built in memory from a dict or a table, with the real Consumer on top.

For the unit tests of a service that reads a combe dataset (Hollow has
TestHollowConsumer for this)::

    from combe.testing import TestDataset

    with TestDataset({"m1": {"title": "Alien", "year": 1979}}, name="movies") as movies:
        with movies.consumer() as consumer:          # a real combe.Consumer
            assert consumer.get("m1")["title"] == "Alien"
            movies.update({"m1": None, "m2": {"title": "Heat", "year": 1995}})   # version 2: changes
            movies.publish({"m3": {"title": "Up", "year": 2009}})               # version 3: a whole state
            consumer.refresh()

Every version is published by the real producer (fold, blobs, integrity
check, manifest, compare-and-swap) into a ``memory://`` store of its own, so
the consumer, its indexes, listeners, diffs and metrics behave as in
production. The limits on removed and added shares are off: a test publishes
whatever state it needs. A record combe cannot store (a datetime, a value
whose type conflicts with its column) raises BadRecordError naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.errors import BadRecordError, ConfigError
from combe.format.layout import new_uid
from combe.format.manifest import check_tags
from combe.producer import PublishOptions, Publisher, RecordFormat
from combe.producer.sources import Messages, Positions, Source
from combe.producer.validators import Limits

STREAM = "combe.testing"

Records = Mapping[Any, Mapping[str, Any] | None]


class _Changes(Source):
    """The changes given to one TestDataset, in order: a source that never loses or reorders one."""

    uri = "combe.testing"

    def __init__(self, name: str) -> None:
        self.name = name
        self.log: list[tuple[Any, Mapping[str, Any] | None]] = []

    def read(self, positions: Positions) -> Iterator[Messages]:
        start = positions.get(STREAM, {}).get("0", 0)
        changes = self.log[start:]
        if not changes:
            return
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        for offset, (key, value) in enumerate(changes, start):
            keys.append((key if isinstance(key, str) else json.dumps(key)).encode())
            try:
                values.append(None if value is None else json.dumps(value, allow_nan=False).encode())
            except (TypeError, ValueError) as exc:  # a datetime, a set, NaN: no JSON value holds it
                raise BadRecordError(f"the record cannot be written as JSON ({exc})", stream=STREAM, partition=0,
                                     offset=offset, where=self.describe(STREAM, 0, offset)) from exc
        offsets = np.arange(start, start + len(changes), dtype=np.int64)
        yield Messages(STREAM, keys, values, np.zeros(len(changes), np.int64), offsets,
                       {"0": start + len(changes)}, len(changes))

    def describe(self, stream: str, partition: int, offset: int) -> str:
        key = self.log[offset][0] if 0 <= offset < len(self.log) else "?"
        return f"change {offset + 1} given to TestDataset {self.name!r} (key {key!r})"


class TestDataset:
    """A dataset in a ``memory://`` store of its own (or ``store``), published from Python values.

    ``data`` is the first version: a mapping of key -> record (a dict), or a
    pyarrow Table, pandas or polars DataFrame with a ``key`` column. Keys that
    are all ints make an ``int64`` dataset, else ``string`` (or say
    ``key_type``). ``close()`` (or the ``with`` block) removes the store.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, data: Records | Any = None, *, name: str = "dataset", key: str = "key",
                 key_type: str | None = None, store: str | None = None, tags: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.key = key
        self.store = store if store is not None else f"memory://combe-testing/{new_uid()}"
        self._owns_store = store is None
        self.dataset = Dataset.open(self.store, name)
        self._key_type = key_type
        self._source = _Changes(name)
        self._publisher: Publisher | None = None
        self._keys: set[Any] = set()
        self.version: int | None = None
        if data is not None:
            self.publish(data, tags=tags)

    # -- publishing -----------------------------------------------------------------

    def publish(self, data: Records | Any, *, tags: Mapping[str, str] | None = None) -> int:
        """Publish ``data`` as the whole next state: keys it lacks are removed. Returns the version now
        announced (the same one when nothing changed)."""
        records = self._records(data, deletes=False)
        changes: dict[Any, Mapping[str, Any] | None] = {key: None for key in self._keys if key not in records}
        changes.update(records)
        return self._publish(changes, tags)

    def update(self, changes: Records | Any, *, tags: Mapping[str, str] | None = None) -> int:
        """Publish ``changes`` on top of the current state: a record replaces the key's, None removes it."""
        return self._publish(self._records(changes, deletes=True), tags)

    def _publish(self, changes: Mapping[Any, Mapping[str, Any] | None], tags: Mapping[str, str] | None) -> int:
        publisher = self._publisher_for(changes)
        publisher.options.tags = check_tags(tags or {})
        logged = len(self._source.log)
        self._source.log += list(changes.items())
        try:
            result = publisher.run_cycle()
        except Exception:
            del self._source.log[logged:]  # not published: the next publish must not read these changes again
            raise
        if result.version is None:
            raise ConfigError(f"TestDataset {self.name!r}: the first version needs at least one record")
        self.version = result.version
        for key, value in changes.items():
            if value is None:
                self._keys.discard(key)
            else:
                self._keys.add(key)
        return result.version

    def _publisher_for(self, changes: Mapping[Any, Any]) -> Publisher:
        if self._publisher is None:
            key_type = self._key_type or ("int64" if changes and all(
                isinstance(k, int) and not isinstance(k, bool) for k in changes) else "string")
            options = PublishOptions(fmt=RecordFormat(key_field=self.key, key_type=key_type),
                                     limits=Limits(max_removed=None, max_added=None))
            self._publisher = Publisher(self.dataset, self._source, options)
        return self._publisher

    def _records(self, data: Records | Any, *, deletes: bool) -> dict[Any, Mapping[str, Any] | None]:
        """Key -> record (None: remove) from a mapping or a table of any of the kinds documented."""
        if isinstance(data, Mapping):
            for key, record in data.items():
                if not isinstance(record, Mapping) and not (deletes and record is None):
                    what = "a dict, or None to remove the key" if deletes else "a dict"
                    raise ConfigError(f"the record of key {key!r} is a {type(record).__name__}; give {what}")
            return dict(data)
        table = _as_table(data)
        if self.key not in table.column_names:
            raise ConfigError(f"the table has no key column {self.key!r} (its columns: "
                              f"{', '.join(table.column_names)}); name the key column with key=")
        keys = table.column(self.key).to_pylist()
        values = table.drop_columns([self.key]).to_pylist()
        if len(set(keys)) != len(keys):
            raise ConfigError(f"the table's key column {self.key!r} holds a key twice")
        return dict(zip(keys, values))

    # -- reading --------------------------------------------------------------------

    def consumer(self, **options: Any) -> Consumer:
        """A real Consumer of this dataset; ``options`` are Consumer's (``refresh_interval``, ``columns``...)."""
        return Consumer(self.store, self.name, **options)

    def close(self) -> None:
        """Remove the store this dataset made (consumers already open keep the version they hold)."""
        if self._owns_store:
            fs = fsspec.filesystem("memory")
            root = "/" + self.store.removeprefix("memory://")
            if fs.exists(root):
                fs.rm(root, recursive=True)

    def __enter__(self) -> TestDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TestDataset {self.name} version {self.version} at {self.store}>"


def _as_table(data: Any) -> pa.Table:
    """A pyarrow Table from a Table, a RecordBatch, a polars or a pandas DataFrame."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "to_arrow"):  # polars
        table: pa.Table = data.to_arrow()
        return table
    if type(data).__module__.split(".")[0] == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    raise ConfigError(f"cannot publish a {type(data).__name__}: give a dict of key -> record, a pyarrow Table, "
                      "or a pandas or polars DataFrame")
