"""The Consumer: an in-memory, read-only copy of a dataset that refreshes atomically.

Readers always go through ``self._view``, one attribute read; a refresh builds
the next View beside it and replaces that reference in one assignment, so a
reader sees one whole version or the next, never a mix. A View obtained with
``view()`` stays the same however long it is held.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from combe.format.dataset import Dataset
from combe.format.errors import CombeError, DatasetNotFound

from .loader import Blobs, Loader
from .view import View

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0


class Consumer:
    """Keeps the announced (or pinned) version of one dataset in memory.

    ``refresh_interval`` seconds between background polls (None: refresh only
    when ``refresh()`` is called); ``pin`` holds this consumer at one version;
    ``cache_dir`` keeps verified blobs on local disk, decompressed and
    memory-mapped, so restarts skip the download and processes share pages.
    """

    def __init__(self, store: str, dataset: str, *, refresh_interval: float | None = None,
                 pin: int | None = None, cache_dir: str | Path | None = None,
                 storage_options: dict[str, Any] | None = None, max_deltas: int = 32) -> None:
        self._dataset = Dataset.open(store, dataset, storage_options)
        self.name = dataset
        self.pin = pin
        self.refresh_interval = refresh_interval
        self._loader = Loader(self._dataset, self._blobs(cache_dir), max_deltas=max_deltas)
        self._lock = threading.Lock()  # one refresh at a time; readers never take it
        self._tag: str | None = None
        self._announced: int | None = None
        self._store_pin: int | None = None
        self.last_refresh: float | None = None
        self.last_error: BaseException | None = None
        self.last_error_at: float | None = None
        self._failures = 0
        self.refresh_errors = 0  # every failed refresh since start, for metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._view: View = self._loader.load(self._target(force=True))
        self.last_refresh = time.time()
        if refresh_interval:
            self._thread = threading.Thread(target=self._run, name=f"combe-refresh-{dataset}", daemon=True)
            self._thread.start()

    def _blobs(self, cache_dir: str | Path | None) -> Blobs | None:
        if cache_dir is None:
            return None
        from .cache import BlobCache

        return BlobCache(self._dataset, Path(cache_dir))

    # -- reading -------------------------------------------------------------------

    @property
    def dataset(self) -> Dataset:
        """The dataset in its store, for reading its manifests and blobs directly."""
        return self._dataset

    @property
    def version(self) -> int:
        return self._view.version

    def get(self, key: Any) -> dict[str, Any] | None:
        return self._view.get(key)

    def get_many(self, keys: Iterable[Any]) -> list[dict[str, Any] | None]:
        return self._view.get_many(keys)

    def view(self) -> View:
        """The current version, fixed for as long as it is held (``with consumer.view() as v``)."""
        return self._view

    def __len__(self) -> int:
        return len(self._view)

    # -- refreshing ----------------------------------------------------------------

    def _target(self, *, force: bool = False) -> int | None:
        """The version to serve, or None when the announcement has not changed since the last poll."""
        if self.pin is not None and not force:
            return None if self.pin == self._view.version else self.pin
        polled = self._dataset.announced() if force else self._dataset.poll_announced(self._tag)
        if polled is None:
            return None
        if polled.pointer is None:
            raise DatasetNotFound(f"dataset {self.name!r} has no announced version at {self._dataset.url}; "
                                  "publish it first (combe publish)", dataset=self.name)
        self._tag, self._announced, self._store_pin = polled.tag, polled.pointer.version, polled.pointer.pin
        return self.pin if self.pin is not None else polled.pointer.serving

    def refresh(self) -> bool:
        """Poll now and move to the version to serve; True if the version changed.

        On failure the current View keeps serving; the error is recorded for
        ``status()`` and raised to the caller.
        """
        with self._lock:
            try:
                target = self._target()
                if target is None or target == self._view.version:
                    self._succeeded()
                    return False
                view = self._loader.load(target, self._view)
            except CombeError as exc:
                self._failed(exc)
                raise
            previous, self._view = self._view, view  # the swap: one assignment
            self._succeeded()
            log.info("%s: version %d -> %d", self.name, previous.version, view.version)
            return True

    def set_pin(self, version: int | None) -> None:
        """Hold this consumer at ``version`` (None: follow the store again), then refresh."""
        self.pin = version
        self._tag = None  # force a real read of the announcement on unpin
        self.refresh()

    def _succeeded(self) -> None:
        self.last_refresh = time.time()
        self._failures = 0

    def _failed(self, exc: BaseException) -> None:
        self.last_error, self.last_error_at = exc, time.time()
        self._failures += 1
        self.refresh_errors += 1
        log.warning("%s: refresh failed (%s); still serving version %d", self.name, exc, self._view.version)

    def _next_wait(self) -> float:
        interval = float(self.refresh_interval or 1.0)
        if not self._failures:
            return interval
        backoff = min(MAX_BACKOFF, interval * 2 ** min(self._failures, 16))
        return backoff * random.uniform(0.5, 1.0)

    def _run(self) -> None:
        while not self._stop.wait(self._next_wait()):
            try:
                self.refresh()
            except CombeError:
                pass  # recorded by refresh(); the current View keeps serving
            except Exception as exc:  # noqa: BLE001 - the refresher must outlive any one failure
                self._failed(exc)

    def status(self) -> dict[str, Any]:
        """Current and announced versions, last refresh, last error, seconds behind."""
        behind = None
        if self._announced is not None and self._announced > self._view.version and self.last_refresh:
            behind = round(time.time() - self.last_refresh, 3)
        return {
            "dataset": self.name,
            "version": self._view.version,
            "announced": self._announced,
            "pin": self.pin,
            "store_pin": self._store_pin,
            "records": len(self._view),
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
