"""Publishing from Python: a whole state at once (``publish_state``), or changes as they happen
(``IncrementalPublisher``).

Both run the publish cycle of producer/cycle.py over a source of Python
objects (producer/sources/python.py): the same decoding, fold, integrity
check, validators and compare-and-swap as ``combe publish``.
``IncrementalPublisher`` is not called ``Publisher`` because that name is
the cycle class every source goes through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any

from combe.format.dataset import Dataset
from combe.format.errors import ConfigError
from combe.format.store import Store

from .cycle import CycleResult, PublishOptions, Publisher
from .records import RecordFormat
from .sources.python import PendingChanges, StateData


def _dataset(store: str | Store, name: str) -> Dataset:
    return Dataset.open(store, name) if isinstance(store, str) else Dataset(store, name)


def _options(options: PublishOptions | None, key: str, key_type: str) -> PublishOptions:
    """``options`` with the record format ``key`` and ``key_type`` say (the one place these calls take it)."""
    options = options or PublishOptions()
    if options.fmt != RecordFormat() and options.declared is None:  # a declared schema's key column sets it
        raise ConfigError("the key is given as key= and key_type=; leave options.fmt unset")
    return replace(options, fmt=RecordFormat(key_field=key, key_type=key_type))


def publish_state(store: str | Store, dataset: str, data: Any, *, key: str | tuple[str, ...] = "key",
                  key_type: str = "string", options: PublishOptions | None = None) -> CycleResult:
    """Publish ``data`` as the whole next state of ``dataset``: keys it lacks are removed, and an unchanged
    state publishes nothing (outcome ``noop``).

    ``data``: an iterable of dicts, a pyarrow Table, RecordBatch or
    RecordBatchReader, or a pandas or polars DataFrame; each row holds its
    key in the ``key`` column, once; ``key=("tenant", "id")`` with a
    ``struct<tenant:...,id:...>`` key type makes a compound key of those
    fields, which stay columns. The validators of ``options.limits``
    apply: by default a state that would remove more than half the records
    (an empty or truncated input) is refused, and nothing is announced.
    """
    settled = _options(options, key if isinstance(key, str) else ",".join(key), key_type)
    with StateData(data, settled.fmt.key_field, settled.fmt.key_type) as source:
        return Publisher(_dataset(store, dataset), source, settled).run_cycle()


class IncrementalPublisher:
    """Changes given one call at a time, published as one version when the ``with`` block ends::

        with IncrementalPublisher("s3://bucket/datasets", "movies") as publisher:
            publisher.put("m1", {"title": "Alien", "year": 1979})
            publisher.delete("m2")
        print(publisher.result)   # the CycleResult; None if the block raised (nothing was published)

    The last change given for a key wins. ``publish()`` publishes what was
    given so far, outside a ``with`` block too, and keeps the state for the
    next call (as the ``combe publish`` daemon does between cycles).
    """

    def __init__(self, store: str | Store, dataset: str, *, key: str = "key", key_type: str = "string",
                 options: PublishOptions | None = None) -> None:
        self._changes = PendingChanges()
        self._publisher = Publisher(_dataset(store, dataset), self._changes, _options(options, key, key_type))
        self.result: CycleResult | None = None
        self._closed = False

    def put(self, key: Any, value: Mapping[str, Any]) -> None:
        """Set ``key``'s record to ``value``, a dict of column -> value."""
        if not isinstance(value, Mapping):
            raise ConfigError(f"put({key!r}, ...): the value is a {type(value).__name__}; give a dict of column "
                              "-> value (delete(key) removes a key)")
        self._give(key, dict(value))  # a copy: the caller may change its dict before the version is published

    def delete(self, key: Any) -> None:
        """Remove ``key`` (removing a key the dataset does not hold changes nothing)."""
        self._give(key, None)

    def _give(self, key: Any, value: dict[str, Any] | None) -> None:
        if self._closed:
            raise ConfigError("this IncrementalPublisher's with block has ended; start another one")
        self._changes.add(key, value)

    def publish(self) -> CycleResult:
        """Publish the changes given since the last publish as one version (``noop`` when they change nothing).
        If it fails, nothing is announced and the changes stay, to publish again."""
        result = self._publisher.run_cycle()
        self._changes.clear()
        self.result = result
        return result

    def __enter__(self) -> IncrementalPublisher:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        """Publish on a normal exit; an exception inside the block publishes nothing."""
        self._closed = True
        if kind is None:
            self.publish()
        else:
            self._changes.clear()
