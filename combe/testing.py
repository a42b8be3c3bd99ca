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

from collections.abc import Mapping
from typing import Any

import fsspec
import pyarrow as pa

from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.errors import ConfigError
from combe.format.layout import new_uid
from combe.producer import CycleResult, IncrementalPublisher, PublishOptions, publish_state
from combe.producer.sources.python import dataframe_table
from combe.producer.validators import Limits

Records = Mapping[Any, Mapping[str, Any] | None]


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
        self.version: int | None = None
        if data is not None:
            self.publish(data, tags=tags)

    # -- publishing -----------------------------------------------------------------

    def publish(self, data: Records | Any, *, tags: Mapping[str, str] | None = None) -> int:
        """Publish ``data`` as the whole next state (``combe.publish_state``): keys it lacks are removed.
        Returns the version now announced (the same one when nothing changed)."""
        if isinstance(data, Mapping):
            self._check_records(data, deletes=False)
            key_type = self._key_type_of(list(data))
            rows: Any = [{**(record or {}), self.key: key} for key, record in data.items()]
        else:
            rows = self._table(data)
            key_type = self._key_type_of(rows.column(self.key).to_pylist())
        return self._announced(publish_state(self.store, self.name, rows, key=self.key, key_type=key_type,
                                             options=self._options(tags)))

    def update(self, changes: Records | Any, *, tags: Mapping[str, str] | None = None) -> int:
        """Publish ``changes`` on top of the current state (an ``IncrementalPublisher``): a record replaces the
        key's, None removes it."""
        if not isinstance(changes, Mapping):
            changes = {row.pop(self.key): row for row in self._table(changes).to_pylist()}
        self._check_records(changes, deletes=True)
        publisher = IncrementalPublisher(self.store, self.name, key=self.key,
                                         key_type=self._key_type_of(list(changes)), options=self._options(tags))
        for key, record in changes.items():
            if record is None:
                publisher.delete(key)
            else:
                publisher.put(key, record)
        return self._announced(publisher.publish())

    def _table(self, data: Any) -> pa.Table:
        table = _as_table(data, self.key)
        if self.key not in table.column_names:
            raise ConfigError(f"the table has no key column {self.key!r} (its columns: "
                              f"{', '.join(table.column_names)}); name the key column with key=")
        return table

    def _announced(self, result: CycleResult) -> int:
        if result.version is None:
            raise ConfigError(f"TestDataset {self.name!r}: the first version needs at least one record")
        self.version = result.version
        return result.version

    def _options(self, tags: Mapping[str, str] | None) -> PublishOptions:
        """The limits on removed and added shares are off: a test publishes whatever state it needs."""
        return PublishOptions(limits=Limits(max_removed=None, max_added=None), tags=dict(tags or {}))

    def _key_type_of(self, keys: list[Any]) -> str:
        """The key type the first version's keys make, kept for every later one."""
        if self._key_type is None:
            self._key_type = "int64" if keys and all(isinstance(k, int) and not isinstance(k, bool)
                                                     for k in keys) else "string"
        return self._key_type

    @staticmethod
    def _check_records(data: Records, *, deletes: bool) -> None:
        for key, record in data.items():
            if not isinstance(record, Mapping) and not (deletes and record is None):
                what = "a dict, or None to remove the key" if deletes else "a dict"
                raise ConfigError(f"the record of key {key!r} is a {type(record).__name__}; give {what}")

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


def _as_table(data: Any, key: str) -> pa.Table:
    """A pyarrow Table from a Table, a RecordBatch, a polars or a pandas DataFrame."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    table = dataframe_table(data, (key,))
    if table is None:
        raise ConfigError(f"cannot publish a {type(data).__name__}: give a dict of key -> record, a pyarrow Table, "
                          "or a pandas or polars DataFrame")
    return table
