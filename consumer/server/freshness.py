"""Never going back: a client that has seen version N asks for at least N (``X-Combe-Min-Version``).

Each gunicorn worker refreshes on its own schedule, so two requests of one
client can reach workers at different versions, and the second answer can be
older than the first. A client that sends the highest ``X-Combe-Version`` it
has seen as ``X-Combe-Min-Version`` is never answered from an older version:
a worker behind it polls the announcement at once and moves on (the requests
waiting for the same dataset share one poll), then answers; or answers 503
with Retry-After when it could not get there yet, or 409 when the store
serves an older version (not announced yet, or pinned below it).
"""

from __future__ import annotations

import logging
import threading

from combe.format.errors import CombeError, RequestError, VersionNotAvailable, VersionNotReached
from combe.format.keys import parse_int64

from ..consumer import Consumer
from ..sharded import AnyView

log = logging.getLogger(__name__)

HEADER = "X-Combe-Min-Version"


def parse_min_version(raw: str | None) -> int | None:
    if raw is None:
        return None
    value = parse_int64(raw)
    if value is None or value < 1:
        raise RequestError(f"{HEADER}: {raw!r} is not a version; send the highest X-Combe-Version seen, "
                           "a whole number from 1")
    return value


def at_least(consumer: Consumer, lock: threading.Lock, wanted: int, wait: float) -> AnyView:
    """A View of version ``wanted`` or newer, refreshing ``consumer`` if it is behind.

    ``lock`` (one per dataset) makes concurrent requests share one refresh;
    one that waits more than ``wait`` seconds for it answers 503.
    """
    view = consumer.view()
    if view.version >= wanted:
        return view
    if not lock.acquire(timeout=wait):
        raise _not_reached(consumer, wanted, view, "it is still refreshing")
    try:
        view = consumer.view()  # another request may have refreshed meanwhile
        if view.version >= wanted:
            return view
        try:
            consumer.refresh()
        except CombeError as exc:
            raise _not_reached(consumer, wanted, consumer.view(), f"refreshing failed: {exc}") from None
        view = consumer.view()
    finally:
        lock.release()
    if view.version >= wanted:
        return view
    status = consumer.status()
    pinned = status["pin"] is not None or status["store_pin"] is not None
    why = (f"pinned at version {status['serving']}" if pinned
           else f"version {status['announced']} is the newest announced")
    raise VersionNotAvailable(f"{consumer.name} version {wanted} or newer was asked for ({HEADER}), and the store "
                              f"serves version {view.version} ({why}); ask again without {HEADER} to accept it",
                              dataset=consumer.name, version=wanted, serving=view.version)


def _not_reached(consumer: Consumer, wanted: int, view: AnyView, why: str) -> VersionNotReached:
    return VersionNotReached(f"{consumer.name} version {wanted} or newer was asked for ({HEADER}); this server "
                             f"serves version {view.version} and has not reached it yet ({why}); retry",
                             dataset=consumer.name, version=wanted, serving=view.version)
