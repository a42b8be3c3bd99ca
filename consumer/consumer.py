"""The Consumer: an in-memory, read-only copy of a dataset that refreshes atomically.

Readers always go through ``self._view``, one attribute read; a refresh builds
the next View beside it (indexes in use included) and replaces that reference
in one assignment, so a reader sees one whole version or the next, never a
mix. A View obtained with ``view()`` stays the same however long it is held.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from combe.format.cache import BlobCache
from combe.format.dataset import Dataset
from combe.format.errors import ConfigError, DatasetNotFound, IntegrityError
from combe.format.manifest import Pointer, parse_time

from .diff import Diff
from .indexes import Fields, Index, normalize_fields
from .listeners import Listener, Listeners, changes
from .loader import Loaded, Loader
from .metrics import RefreshStats
from .rows import Record
from .sharded import AnyView, ShardedIndex, ShardedLoaded, ShardedLoader, ShardedView, held_shards, sharded_changes
from .timeline import KeyHistory, Timeline
from .view import View

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0
# After failures the wait doubles, up to this many refresh intervals (and MAX_BACKOFF): a consumer
# catches up within that many intervals of the store recovering, however long the outage was.
MAX_BACKOFF_INTERVALS = 16


class Consumer:
    """Keeps the announced (or pinned) version of one dataset in memory.

    ``refresh_interval`` seconds between background polls (None: refresh only
    when ``refresh()`` is called); ``pin`` holds this consumer at one version
    (over the store-wide pin, ``combe pin``); ``cache_dir`` keeps verified
    blobs on local disk, decompressed and memory-mapped, so restarts skip the
    download and processes share pages; every cached file is checked whole
    when it is opened (``cache_max_bytes`` bounds the directory; see
    format/cache.py); ``columns`` loads only those value
    columns (the key always); ``max_deltas`` caps the deltas kept over a
    snapshot before a snapshot is loaded instead (so does a delta chain
    bigger than its snapshot). ``shards`` holds only those shards of a
    sharded dataset (all of them by default; consumer/sharded.py): a key of
    another shard raises ShardNotHeld. ``trusted_keys`` (Ed25519 public key
    files) makes it serve only versions signed by one of those keys: an
    unsigned or forged version is a failed refresh (docs/FORMAT.md,
    "Signatures").
    """

    def __init__(self, store: str, dataset: str, *, refresh_interval: float | None = None,
                 pin: int | None = None, cache_dir: str | Path | None = None,
                 storage_options: dict[str, Any] | None = None, max_deltas: int = 32,
                 columns: Collection[str] | None = None, cache_max_bytes: int | None = None,
                 shards: Collection[int] | None = None, trusted_keys: Iterable[str | Path] = ()) -> None:
        if isinstance(columns, str):
            raise ConfigError(f"columns={columns!r}: give a list of column names, e.g. columns=[{columns!r}]")
        self._dataset = Dataset.open(store, dataset, storage_options, trusted_keys=trusted_keys)
        self.name = dataset
        self.pin = pin
        self.refresh_interval = refresh_interval
        self._cache = self._blob_cache(cache_dir, cache_max_bytes)
        self._timeline = Timeline(self._dataset, self._cache)  # every column, whatever ``columns`` says
        # One refresh at a time; readers never take it. Reentrant so that a listener may call refresh().
        self._lock = threading.RLock()
        self._listeners = Listeners(dataset)
        self._indexed: list[Fields] = []  # indexes asked for, built on each new View before the swap
        self._tag: str | None = None
        self._pointer: Pointer | None = None
        self.last_refresh: float | None = None
        self.last_error: BaseException | None = None
        self.last_error_at: float | None = None
        self.last_plan: str | None = None
        self._failures = 0
        self.refresh_stats = RefreshStats()  # refreshes by result and their seconds, for metrics (consumer/metrics.py)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        started = time.perf_counter()
        self._poll(force=True)
        assert self._pointer is not None
        count = self._pointer.shard_count
        self._loader: Loader | ShardedLoader
        if count is None:
            if shards is not None:
                raise ConfigError(f"shards={shards!r}: dataset {dataset!r} is not sharded; leave shards out")
            self.shards: tuple[int, ...] | None = None
            self._loader = Loader(self._dataset, self._cache, max_deltas=max_deltas, columns=columns)
        else:
            self.shards = held_shards(shards, count, dataset)
            self._loader = ShardedLoader(self._dataset, count, self.shards, self._cache, max_deltas=max_deltas,
                                         columns=columns)
        target = self._wanted(pin)
        self._check_columns(columns, target)
        loaded = self._loader.load(target)
        self._view: AnyView = loaded.view
        self.refresh_stats.last_load_seconds = time.perf_counter() - started
        self._keep(loaded, None)
        if self._cache is not None:
            self._cache.evict()
        self.last_plan = _describe(loaded)
        self.last_refresh = time.time()
        if refresh_interval:
            self._thread = threading.Thread(target=self._run, name=f"combe-refresh-{dataset}", daemon=True)
            self._thread.start()

    def _blob_cache(self, cache_dir: str | Path | None, max_bytes: int | None) -> BlobCache | None:
        if cache_dir is None:
            if max_bytes is not None:
                raise ConfigError("cache_max_bytes applies to a blob cache: give cache_dir too")
            return None
        return BlobCache(self._dataset, Path(cache_dir), max_bytes=max_bytes)

    def _check_columns(self, columns: Collection[str] | None, version: int) -> None:
        """Refuse a misspelt column before loading anything."""
        schema = self._loader.manifest(version).schema
        unknown = sorted(set(columns or ()) - set(schema.columns) - {schema.key_field})
        if unknown:
            raise ConfigError(f"columns {', '.join(map(repr, unknown))} are not in dataset {self.name!r} version "
                              f"{version}; its columns are: {', '.join(schema.columns)}")

    # -- reading -------------------------------------------------------------------

    @property
    def dataset(self) -> Dataset:
        """The dataset in its store, for reading its manifests and blobs directly."""
        return self._dataset

    @property
    def version(self) -> int:
        return self._view.version

    @property
    def shard_count(self) -> int | None:
        """How many shards the dataset has; None for an unsharded dataset."""
        return self._pointer.shard_count if self._pointer else None

    def get(self, key: Any) -> Record | None:
        """The record with ``key`` as a new dict (only the loaded ``columns``), or None."""
        return self._view.get(key)

    def get_many(self, keys: Iterable[Any]) -> list[Record | None]:
        """Records for ``keys`` in order, None where absent, all from one version."""
        return self._view.get_many(keys)

    def get_table(self, keys: Iterable[Any]) -> pa.Table:
        """The records for ``keys`` as a pyarrow Table, in order, absent keys left out (fastest for many keys)."""
        return self._view.get_table(keys)

    def view(self) -> AnyView:
        """The current version, fixed for as long as it is held (``with consumer.view() as v``)."""
        return self._view

    def index(self, fields: str | tuple[str, ...]) -> LiveIndex:
        """An index on ``fields`` that follows refreshes: each call uses the current version.

        The index is built now and then kept on every new version before it is
        served, reusing the part over an unchanged snapshot.
        """
        names = normalize_fields(fields)
        self._view.index(names)  # fail now on an unknown column, and have it ready
        with self._lock:
            if names not in self._indexed:
                self._indexed.append(names)
        return LiveIndex(self, names)

    def __len__(self) -> int:
        return len(self._view)

    # -- comparing versions ------------------------------------------------------------

    def diff(self, from_version: int, to_version: int | None = None, *, method: str | None = None) -> Diff:
        """What changed from ``from_version`` to ``to_version`` (default: the version served now).

        Any two announced versions still in the store, in either order; every
        column, whatever ``columns`` this consumer loads. Computed from the
        deltas between them or from both states, whichever reads fewer bytes
        (``method`` forces one); the Diff says which (consumer/timeline.py).
        """
        view = self._view
        if isinstance(view, ShardedView):
            raise self._unsharded_only("diff()")
        return self._timeline.diff(from_version, view.version if to_version is None else to_version,
                                   method=method, current=view)

    def history(self, key: Any, *, to_version: int | None = None) -> KeyHistory:
        """Every version up to ``to_version`` (default: the announced one) at which ``key`` changed, oldest first."""
        if self.shards is not None:
            raise self._unsharded_only("history()")
        return self._timeline.history(key, to_version=to_version)

    def _unsharded_only(self, what: str) -> ConfigError:
        return ConfigError(f"{what} reads one chain of versions; dataset {self.name!r} is sharded, and comparing "
                           "its versions is not supported yet")

    # -- listening -------------------------------------------------------------------

    def on_update(self, callback: Listener) -> Listener:
        """Call ``callback(update)`` after each refresh that changes the version (usable as a decorator).

        ``update`` has ``from_version``, ``to_version`` and the ``added``,
        ``updated`` and ``removed`` keys. It runs on the refreshing thread after
        the new version is served; one that raises is logged and does not stop
        the refresh.
        """
        return self._listeners.add(callback)

    def remove_listener(self, callback: Listener) -> None:
        self._listeners.remove(callback)

    # -- refreshing ----------------------------------------------------------------

    def _poll(self, *, force: bool = False) -> None:
        """Read the announcement if it changed (one conditional request)."""
        polled = self._dataset.announced() if force else self._dataset.poll_announced(self._tag)
        if polled is None:
            return
        if polled.pointer is None:
            raise DatasetNotFound(f"dataset {self.name!r} has no announced version at {self._dataset.url}; "
                                  "publish it first (combe publish)", dataset=self.name)
        if self._pointer is not None and polled.pointer.version < self._pointer.version:
            # Producers only ever move the announcement forward (a rollback is a pin, which keeps the
            # version): one that went back was deleted and recreated, or replaced by an old copy.
            raise IntegrityError(f"announced.json of {self.name!r} went back from version {self._pointer.version} "
                                 f"to {polled.pointer.version}; not following it (deleted and announced again, or "
                                 f"an old copy put back?). Still serving version {self._view.version}.")
        self._tag, self._pointer = polled.tag, polled.pointer

    def _wanted(self, pin: int | None) -> int:
        """The version to serve: ``pin`` (this consumer's), else the store-wide pin, else the announced one.

        A pin names a version that is or was announced (ConfigError otherwise).
        """
        assert self._pointer is not None
        if pin is None:
            return self._pointer.serving
        self._pointer.check_pin(pin)
        return pin

    def refresh(self) -> bool:
        """Poll now and move to the version to serve; True if the version changed.

        On failure the current View keeps serving; the error is recorded for
        ``status()`` and raised to the caller.
        """
        with self._lock:
            started = time.perf_counter()
            try:
                return self._move(self.pin)
            except Exception as exc:
                self._failed(exc)
                self.refresh_stats.record("failed", time.perf_counter() - started)
                raise

    def set_pin(self, version: int | None) -> None:
        """Hold this consumer at ``version`` (None: follow the store again), then refresh.

        A version that cannot be served (never announced, removed by gc, or a
        failed load) raises, and the consumer stays as it was: same pin, same
        version, nothing recorded as a failed refresh.
        """
        with self._lock:
            self._move(version, force=True)  # a real read of the announcement: the pin is checked against it

    def _move(self, pin: int | None, *, force: bool = False) -> bool:
        """Poll, then serve the version ``pin`` asks for; True if the version changed. Call with the lock held.

        ``self.pin`` becomes ``pin`` only once that version is served, so a
        refused pin changes nothing.
        """
        started = time.perf_counter()
        previous = self._view
        self._poll(force=force)
        target = self._wanted(pin)
        if target == previous.version:
            self.pin = pin
            self._succeeded()
            self.refresh_stats.record("unchanged", time.perf_counter() - started)
            return False
        loaded = self._load(target, previous)
        for fields in self._indexed:
            loaded.view.index(fields)  # built before the swap, so no reader waits for it
        self._view = loaded.view  # the swap: one assignment, every held shard at once
        self.refresh_stats.record("changed", time.perf_counter() - started)  # before the listeners run
        self.pin = pin
        self._keep(loaded, previous)
        self.last_plan = _describe(loaded)
        self._succeeded()
        log.info("%s: version %d -> %d by %s", self.name, previous.version, loaded.view.version, self.last_plan)
        self._notify(previous, loaded)
        if self._cache is not None:
            del previous  # the View just replaced is kept from eviction only if a reader still holds it
            self._cache.evict()
        return True

    def _load(self, target: int, previous: AnyView) -> Loaded | ShardedLoaded:
        if isinstance(self._loader, ShardedLoader):
            assert isinstance(previous, ShardedView)
            return self._loader.load(target, previous)
        assert isinstance(previous, View)
        return self._loader.load(target, previous)

    def _keep(self, loaded: Loaded | ShardedLoaded, previous: AnyView | None) -> None:
        """Tell the blob cache which blobs the new View (each held shard's) is built from."""
        if self._cache is None:
            return
        if isinstance(loaded, ShardedLoaded):
            assert previous is None or isinstance(previous, ShardedView)
            for part, before in loaded.pairs(previous):
                self._keep_view(self._cache, part, before)
        else:
            assert previous is None or isinstance(previous, View)
            self._keep_view(self._cache, loaded, previous)

    @staticmethod
    def _keep_view(cache: BlobCache, loaded: Loaded, previous: View | None) -> None:
        """Spare the blobs ``loaded``'s View is built from while it lives; a View extending ``previous``
        (the one the load started from) needs that one's blobs too."""
        plan = loaded.plan
        blobs = [ref.sha256 for _, ref in plan.steps]
        extends = previous if plan.start == "current" else None
        if extends is None and plan.snapshot.snapshot is not None:
            blobs.append(plan.snapshot.snapshot.sha256)
        cache.keep(loaded.view, blobs, extends=extends)

    def _notify(self, previous: AnyView, loaded: Loaded | ShardedLoaded) -> None:
        if not self._listeners:
            return
        try:
            if isinstance(loaded, ShardedLoaded):
                assert isinstance(previous, ShardedView)
                update = sharded_changes(previous, loaded)
            else:
                assert isinstance(previous, View)
                update = changes(previous, loaded.view, loaded.touched)
        except Exception:  # noqa: BLE001 - the new version is served; only the notification is lost
            log.exception("%s: could not work out the changes %d -> %d for listeners", self.name,
                          previous.version, loaded.view.version)
            return
        self._listeners.notify(update)

    def _succeeded(self) -> None:
        self.last_refresh = time.time()
        self._failures = 0

    def _failed(self, exc: BaseException) -> None:
        self.last_error, self.last_error_at = exc, time.time()
        self._failures += 1
        log.warning("%s: refresh failed (%s); still serving version %d", self.name, exc, self._view.version)

    @property
    def refresh_errors(self) -> int:
        """Failed refreshes since start."""
        return self.refresh_stats.counts["failed"]

    def _next_wait(self) -> float:
        interval = float(self.refresh_interval or 1.0)
        if not self._failures:
            return interval
        backoff = min(MAX_BACKOFF, interval * MAX_BACKOFF_INTERVALS, interval * 2 ** min(self._failures, 16))
        return backoff * random.uniform(0.5, 1.0)

    def _run(self) -> None:
        while not self._stop.wait(self._next_wait()):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001, S110 - recorded by refresh(); the refresher must outlive any failure
                pass

    def status(self) -> dict[str, Any]:
        """Current and announced versions, pins, last refresh and error, seconds behind the announcement.

        ``seconds_behind`` is 0 while the version to serve is served, else the
        seconds since the announcement this consumer has not reached yet.
        """
        pointer, view = self._pointer, self._view
        wanted = self.pin if self.pin is not None else pointer.serving if pointer else None
        behind = 0.0
        if wanted is not None and wanted != view.version and pointer is not None:
            behind = round(max(0.0, time.time() - parse_time(pointer.at).timestamp()), 3)
        chain: dict[str, Any] = {"base_version": view.base_version, "deltas_applied": view.deltas_applied} \
            if isinstance(view, View) else \
            {"shards": {shard: {"version": v.version, "base_version": v.base_version,
                                "deltas_applied": v.deltas_applied, "records": len(v)}
                        for shard, v in view.views.items()}, "shard_count": view.shard_count}
        return {
            "dataset": self.name,
            "version": view.version,
            "announced": pointer.version if pointer else None,
            "announced_at": pointer.at if pointer else None,
            "serving": wanted,
            "pin": self.pin,
            "store_pin": pointer.pin if pointer else None,
            "records": len(view),
            "tags": view.tags,
            **chain,
            "last_load": self.last_plan,
            "last_refresh": self.last_refresh,
            "last_error": str(self.last_error) if self.last_error else None,
            "last_error_at": self.last_error_at,
            "seconds_behind": behind,
            "refresh_errors": self.refresh_errors,
        }

    # -- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background refresher; the last View stays readable."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Consumer {self.name} version {self._view.version}>"


class LiveIndex:
    """A consumer's index on some fields; every call reads the version served at that moment."""

    def __init__(self, consumer: Consumer, fields: Fields) -> None:
        self.consumer = consumer
        self.fields = fields

    def current(self) -> Index | ShardedIndex:
        """The index of the version served now (hold it to make several calls on one version)."""
        return self.consumer.view().index(self.fields)

    def get(self, value: Any, *, offset: int = 0, limit: int | None = None) -> list[Record]:
        return self.current().get(value, offset=offset, limit=limit)

    def range(self, lo: Any = None, hi: Any = None, *, offset: int = 0, limit: int | None = None) -> list[Record]:
        return self.current().range(lo, hi, offset=offset, limit=limit)

    def __repr__(self) -> str:
        return f"<LiveIndex {self.fields} of {self.consumer!r}>"


def _describe(loaded: Loaded | ShardedLoaded) -> str:
    """How a load went, for ``status()["last_load"]`` and the log."""
    return loaded.describe() if isinstance(loaded, ShardedLoaded) else loaded.plan.describe()
