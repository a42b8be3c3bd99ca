"""The datasets one server answers for, loaded in the background.

A server process must answer ``/healthz`` at once, even while a dataset is
still downloading or not yet published (and a gunicorn worker that blocks in
start-up past its timeout is killed). So each dataset is loaded by a
background thread and retried with backoff until it loads; until then its
routes answer 503 and ``/readyz`` says which one is missing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from combe.format.cache import BlobCache
from combe.format.errors import CombeError, ConfigError, DatasetNotFound, DatasetNotReady

from ..consumer import Consumer
from ..loader import Blobs, StoreBlobs
from ..timeline import Timeline
from .history import Comparisons, History

log = logging.getLogger(__name__)

MAX_RETRY = 30.0


@dataclass(frozen=True)
class Served:
    """A loaded dataset: the consumer answering lookups, its history for the version routes, diffs and key histories."""

    consumer: Consumer
    history: History
    comparisons: Comparisons
    # Held by a request refreshing the consumer to reach the version a client asked for (freshness.py).
    refreshing: threading.Lock = field(default_factory=threading.Lock, compare=False)


class Catalog:
    """Name -> served dataset. ``consumers`` given here are served as they are and stay the caller's to close."""

    def __init__(self, store: str | None, names: Iterable[str], *, refresh_interval: float | None,
                 cache_dir: str | Path | None = None, storage_options: dict[str, Any] | None = None,
                 consumers: Iterable[Consumer] = (), shards: Collection[int] | None = None,
                 trusted_keys: Iterable[str | Path] = ()) -> None:
        self.store = store
        self.shards = shards  # the shards held of every dataset loaded here (None: whole datasets)
        self.trusted_keys = list(trusted_keys)  # the consumers it opens serve only versions signed by these
        self.refresh_interval = refresh_interval
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.storage_options = storage_options
        given = list(consumers)
        self.names: list[str] = list(dict.fromkeys([c.name for c in given] + list(names)))
        # Replaced whole, never mutated: request threads read it with one attribute access while
        # the loader thread adds datasets, so a reader never sees a dict being changed.
        self._served: dict[str, Served] = {c.name: self._serve(c) for c in given}
        self._owned: set[str] = set()
        self.load_errors: dict[str, int] = {name: 0 for name in self.names}
        self.last_load_error: dict[str, str] = {}
        if store is None and set(self.names) - set(self._served):
            raise ConfigError(f"no store given to load datasets from: give store= to load {', '.join(self.names)}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _blobs(self, consumer: Consumer) -> Blobs:
        """The history reads blobs through the consumer's cache directory when there is one: deltas it applied
        are there."""
        if self.cache_dir is not None:
            return BlobCache(consumer.dataset, self.cache_dir)
        return StoreBlobs(consumer.dataset)

    def _serve(self, consumer: Consumer) -> Served:
        blobs = self._blobs(consumer)
        return Served(consumer, History(consumer.dataset, blobs), Comparisons(Timeline(consumer.dataset, blobs)))

    # -- reading -----------------------------------------------------------------

    def get(self, name: str) -> Served:
        """The served dataset; 404 for a name this server does not serve, 503 while it loads."""
        served = self._served.get(name)
        if served is not None:
            return served
        if name not in self.load_errors:
            raise DatasetNotFound(f"this server does not serve a dataset named {name!r}; "
                                  "GET /v1/datasets lists the ones it does", dataset=name)
        reason = self.last_load_error.get(name)
        raise DatasetNotReady(f"dataset {name!r} has not loaded yet" + (f" ({reason})" if reason else "")
                              + "; retrying in the background", dataset=name)

    def loaded(self) -> dict[str, Served]:
        return self._served

    @property
    def ready(self) -> bool:
        return len(self._served) == len(self.names)

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.ready

    # -- loading -----------------------------------------------------------------

    def start(self, on_tick: Callable[[], None] | None = None, tick: float = 1.0) -> None:
        """Load missing datasets in the background; call ``on_tick`` every ``tick`` seconds until closed."""
        self._thread = threading.Thread(target=self._run, args=(on_tick, tick), name="combe-refresh-loader",
                                        daemon=True)
        self._thread.start()

    def _run(self, on_tick: Callable[[], None] | None, tick: float) -> None:
        next_try = {name: 0.0 for name in self.names if name not in self._served}
        while True:
            for name in [n for n, at in next_try.items() if at <= time.monotonic()]:
                if self._load(name):
                    del next_try[name]
                else:
                    failures = self.load_errors[name]
                    next_try[name] = time.monotonic() + min(MAX_RETRY, 0.25 * 2 ** min(failures, 8))
            if on_tick is not None:
                try:
                    on_tick()
                except Exception:  # noqa: BLE001 - metrics must never stop the loader
                    log.exception("updating server metrics failed")
            elif not next_try:
                return
            wait = min([tick, *(max(0.0, at - time.monotonic()) for at in next_try.values())])
            if self._stop.wait(wait):
                return

    def _load(self, name: str) -> bool:
        assert self.store is not None
        try:
            consumer = Consumer(self.store, name, refresh_interval=self.refresh_interval, cache_dir=self.cache_dir,
                                storage_options=self.storage_options, shards=self.shards,
                                trusted_keys=self.trusted_keys)
        except Exception as exc:  # noqa: BLE001 - any failure is retried; the message goes to /readyz
            self.load_errors[name] += 1
            self.last_load_error[name] = str(exc)
            if isinstance(exc, CombeError):
                log.warning("dataset %s: cannot load yet (%s); retrying", name, exc)
            else:
                log.exception("dataset %s: loading failed unexpectedly; retrying", name)
            return False
        if self._stop.is_set():  # closed while loading: do not leave a refresher running
            consumer.close()
            return True
        self._owned.add(name)
        self._served = {**self._served, name: self._serve(consumer)}
        log.info("dataset %s: serving version %d (%d records)", name, consumer.version, len(consumer))
        return True

    def close(self) -> None:
        """Stop loading and stop the refreshers of the consumers this catalog opened."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for name in self._owned:
            self._served[name].consumer.close()
