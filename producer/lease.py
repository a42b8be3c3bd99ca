"""Single-producer enforcement: one producer of a dataset publishes, the others wait to take over.

The producers share ``lease.json`` (format/lease.py), written only by
compare-and-swap:

- Taking: a producer that finds no lease, or one whose ``expires_at`` has
  passed by its own clock, swaps in a lease naming itself with the epoch
  raised by one. Then it fences: it swaps ``announced.json`` to carry that
  epoch (``lease_epoch``; same version, pin and time). Every announcement an
  older holder prepared quotes the tag read before the fence, so its swap
  fails, and read again the announcement shows a newer epoch: it is refused.
- Renewing: the holder swaps in new times every third of the duration. A lost
  swap means another producer took the lease: this one stops publishing.
- Announcing: just before each compare-and-swap of ``announced.json`` the
  holder reads ``lease.json`` again and refuses unless it still holds it,
  unexpired, under its epoch; and it refuses an announcement that carries a
  newer epoch than its own. So a producer that lost its lease never announces.
- Waiting: the others read the lease every third of its duration. The leader
  renews at least every duration/3, so a follower holds the lease at most
  duration + duration/3 after the leader's last renewal (a killed leader's
  last renewal is before its death), and starts a cycle at once.

Expiry compares the holder's written ``expires_at`` with the reader's clock:
hosts' clocks must agree to well within the duration (NTP). A clock that is
off makes a follower take over early or late; it never lets two producers
announce, since the fence does not depend on clocks.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from combe.format.dataset import Announced, Dataset
from combe.format.errors import CombeError, ConfigError, ConflictError
from combe.format.lease import Lease
from combe.format.manifest import Pointer, time_text

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class ProducerLease:
    """This producer's side of ``lease.json``: take it, keep it renewed, check it before announcing."""

    def __init__(self, dataset: Dataset, holder: str, duration: float) -> None:
        if not duration > 0:
            raise ConfigError(f"lease duration {duration}: use a number of seconds above 0")
        self.dataset = dataset
        self.holder = holder
        self.duration_ms = max(1, round(duration * 1000))
        self.epoch: int | None = None  # the epoch held; None while another producer holds the lease
        self.seen: Lease | None = None  # the lease as last read or written
        self._tag: str | None = None
        self._lock = threading.Lock()  # the renewing thread and the publishing one
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def interval(self) -> float:
        """How often the holder renews and the others read: a third of the duration."""
        return self.duration_ms / 3000

    @property
    def held(self) -> bool:
        return self.epoch is not None

    def _written(self, base: Lease | None, now: datetime, epoch: int) -> Lease:
        expires = time_text(now + timedelta(milliseconds=self.duration_ms))
        if base is not None and base.holder == self.holder and base.epoch == epoch:
            return replace(base, renewed_at=time_text(now), expires_at=expires, duration_ms=self.duration_ms)
        return Lease(self.dataset.name, self.holder, epoch, time_text(now), time_text(now), expires,
                     self.duration_ms)

    def acquire(self) -> bool:
        """Take the lease if it is free or expired (or renew it if this producer holds it); True when held.

        A lease taken is fenced into ``announced.json`` before this returns."""
        with self._lock:
            lease, tag = self.dataset.lease()
            now = _now()
            if lease is not None and lease.holder == self.holder:
                epoch = lease.epoch  # ours (written by this producer, maybe before a renewal that seemed lost)
            elif lease is None or lease.expired(now):
                epoch = (lease.epoch if lease else 0) + 1
            else:
                self._lose(lease)
                return False
            written = self._written(lease, now, epoch)
            new_tag = self.dataset.swap_lease(written, tag)
            if new_tag is None:  # another producer swapped first: the next read shows whose it is
                self._lose(None)
                return False
            taken = self.epoch != epoch
            self.epoch, self._tag, self.seen = epoch, new_tag, written
        if taken:
            log.info("%s: took the lease (epoch %d)%s", self.dataset.name, epoch,
                     f" from {lease.holder}, expired at {lease.expires_at}" if lease and lease.holder != self.holder
                     else "")
            try:
                self._fence(epoch)
            except BaseException:
                # Not held until fenced: lease.json still names this producer, so the next try fences again.
                with self._lock:
                    self._lose(None)
                raise
        return True

    def renew(self) -> bool:
        """Push the expiry on by a duration; False (and no longer held) if another producer took the lease."""
        with self._lock:
            if self.epoch is None or self.seen is None:
                return False
            written = self._written(self.seen, _now(), self.epoch)
            new_tag = self.dataset.swap_lease(written, self._tag)
            if new_tag is None:
                log.warning("%s: lost the lease (epoch %d) to another producer; this one stops publishing",
                            self.dataset.name, self.epoch)
                self._lose(None)
                return False
            self._tag, self.seen = new_tag, written
            return True

    def release(self) -> None:
        """Let the lease expire now (a stopping holder), so a follower takes over at its next read."""
        self.stop_renewing()
        with self._lock:
            if self.epoch is None or self.seen is None:
                return
            now = time_text(_now())
            if self.dataset.swap_lease(replace(self.seen, renewed_at=now, expires_at=now), self._tag) is None:
                log.warning("%s: the lease had already been taken when this producer released it",
                            self.dataset.name)
            self._lose(None)

    def _lose(self, other: Lease | None) -> None:
        self.epoch, self._tag = None, None
        if other is not None:
            self.seen = other

    def _fence(self, epoch: int) -> None:
        """Record ``epoch`` in ``announced.json``: announcements prepared under an older lease fail their swap."""
        def change(now: Announced) -> Pointer | None:
            pointer = now.pointer
            if pointer is None or (pointer.lease_epoch or 0) >= epoch:
                return None  # nothing announced yet (a first version is create-only), or fenced already
            return replace(pointer, lease_epoch=epoch)

        self.dataset.update_announced(change, doing=f"recording lease epoch {epoch}")

    def check(self) -> int:
        """The epoch to announce with, read again from ``lease.json``; ConflictError if this producer lost it."""
        lease, _ = self.dataset.lease()
        if lease is None or lease.holder != self.holder or lease.epoch != self.epoch or lease.expired(_now()):
            held = f"held by {lease.holder} (epoch {lease.epoch}) until {lease.expires_at}" if lease else "missing"
            raise ConflictError(f"{self.dataset.name}: this producer (lease epoch {self.epoch}) no longer holds the "
                                f"lease: lease.json is {held}; nothing was announced by this one",
                                dataset=self.dataset.name, version=0)
        return lease.epoch

    def announce_epoch(self, pointer: Pointer | None) -> int:
        """The epoch a new announcement replacing ``pointer`` carries; ConflictError if this producer is fenced."""
        epoch = self.check()
        fenced = pointer.lease_epoch if pointer else None
        if fenced is not None and fenced > epoch:
            raise ConflictError(f"{self.dataset.name}: announced.json carries lease epoch {fenced}, newer than this "
                                f"producer's {epoch}; nothing was announced by this one",
                                dataset=self.dataset.name, version=0)
        return epoch

    # -- renewing in the background, while cycles run ------------------------------------------

    def start_renewing(self) -> None:
        """Renew every third of the duration on a thread of its own, whatever the publishing thread does."""
        if self._renewer is None:
            self._stop.clear()
            self._renewer = threading.Thread(target=self._renew_loop, name="combe-lease", daemon=True)
            self._renewer.start()

    def stop_renewing(self) -> None:
        if self._renewer is not None:
            self._stop.set()
            self._renewer.join()
            self._renewer = None

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.held:
                continue
            try:
                self.renew()
            except CombeError as exc:  # a store that fails now may answer at the next renewal
                log.warning("%s: could not renew the lease (%s); trying again in %.1f s", self.dataset.name, exc,
                            self.interval)


def announce_epoch(lease: ProducerLease | None, pointer: Pointer | None) -> int | None:
    """The ``lease_epoch`` of an announcement replacing ``pointer``: the holder's own, checked; a producer
    without a lease carries the fence over, as it carries the pin."""
    if lease is None:
        return pointer.lease_epoch if pointer else None
    return lease.announce_epoch(pointer)
