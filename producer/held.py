"""Kafka batches held until a read ends, and decoded ahead of it while no key has repeated.

A compacted topic's cycle decodes only the latest message of each key, once
the read has ended (Publisher._collect): a message superseded in the same
read is never decoded, as if the log cleaner had removed it. But while every
key read so far is distinct, every message read so far is its key's latest,
so its batch can be decoded at once, on a worker thread, while the client
waits on the brokers: a topic of distinct keys (a first read, a busy topic
since its last compaction) then finds its decoding done when the read ends.

The guess is dropped the moment it can be wrong: a key comes again (keys are
compared by a 64-bit hash of their bytes, so a collision drops it too, never
the other way), a batch holds a bad record (it might yet be superseded), the
decoder refuses a batch, or a second stream appears. The read's end then
decodes the latest messages as it would have, from the batches still held,
so the changes come out the same either way.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from combe.format.errors import BadRecordError
from combe.format.index import one_array

from .decode import Decode, Places
from .fold import Changes

log = logging.getLogger(__name__)


class Held(NamedTuple):
    """Kafka messages kept until the read ends: keys, and values as ``value_lines`` made them (JSON values;
    ``deleted`` marks tombstones, ``clean`` marks the messages whose batch has no value holding a line break)
    or as they came (``deleted`` None)."""

    stream: str
    keys: pa.Array
    values: pa.Array | pa.ChunkedArray
    deleted: np.ndarray | None
    clean: np.ndarray
    partitions: np.ndarray
    offsets: np.ndarray

    def decode(self, decode: Decode) -> list[BadRecordError]:
        """Every message of the batch into ``decode``'s changes, in order; the bad records."""
        places = Places(self.stream, self.partitions, self.offsets)
        values = one_array(self.values)
        if self.deleted is None:
            return decode.pairs(self.keys, values, places)
        return decode.json_lines(self.keys, values, self.deleted, places, clean=bool(self.clean.all()))

    def take(self, chosen: np.ndarray) -> Held:
        """The messages at ``chosen`` (indices into this batch), in that order."""
        taken = pa.array(chosen)
        # One copy of the chosen values, out of every batch at once.
        return Held(self.stream, self.keys.take(taken), one_array(self.values.take(taken)),
                    None if self.deleted is None else self.deleted[chosen], self.clean[chosen],
                    self.partitions[chosen], self.offsets[chosen])


def joined(parts: list[Held]) -> Held:
    """Batches of one stream as one; its values stay chunked (``take`` or ``one_array`` copies them once)."""
    first = parts[0]
    return Held(first.stream, pa.concat_arrays([part.keys for part in parts]),
                pa.chunked_array([part.values for part in parts]),
                None if first.deleted is None else np.concatenate([part.deleted for part in parts]),
                np.concatenate([part.clean for part in parts]), np.concatenate([part.partitions for part in parts]),
                np.concatenate([part.offsets for part in parts]))


class Ahead:
    """Decodes held batches on a worker thread as they arrive, into changes of its own, for as long as every
    key read is distinct (see the module's docstring); ``result`` hands over those changes if the guess held."""

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="combe-decode-ahead")
        self._waiting: deque[Held] = deque()
        self._lock = threading.Lock()
        self._last: Future[None] | None = None
        self._stream: str | None = None
        # Hashes of every key read: sorted and distinct as of the last check, then each batch's since.
        self._hashes: list[np.ndarray] = []
        self._count = 0
        self._next_check = 0
        self.wrong: str | None = None  # why the guess was dropped

    def add(self, part: Held, raw_keys: list[bytes | None]) -> None:
        """A batch just read (``raw_keys``: its keys as the client gave them, to hash)."""
        if self.wrong:
            return
        if self._stream is None:
            self._stream = part.stream
        elif part.stream != self._stream:
            self._drop(f"a second stream ({part.stream}) was read")
            return
        self._hashes.append(np.fromiter(map(hash, raw_keys), np.int64, len(raw_keys)))
        self._count += len(raw_keys)
        # Checked at every doubling of the keys read: each check sorts them all, and a topic whose keys repeat
        # is found out at its first batches.
        if self._count >= self._next_check and not self._distinct():
            return
        with self._lock:
            self._waiting.append(part)
        self._last = self._pool.submit(self._work)

    def result(self) -> Changes | None:
        """The changes decoded ahead, once the worker is done, if every key read was distinct; else None (and
        the worker's changes are dropped)."""
        try:
            if not self.wrong and self._distinct() and self._last is not None:
                self._last.result()
            if self.wrong:
                log.debug("decoding ahead of the read's end dropped: %s", self.wrong)
                return None
            return self._decode.changes
        finally:
            self.close()

    def close(self) -> None:
        """Stop the worker (a batch it is decoding is finished and dropped)."""
        with self._lock:
            self._waiting.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _distinct(self) -> bool:
        """Whether every key read so far is distinct; drops the guess if not."""
        if len(self._hashes) > 1 or (self._hashes and self._next_check <= self._count):
            # A sort and a look at neighbours (np.unique hashes, several times slower on int64 here).
            every = np.sort(np.concatenate(self._hashes))
            if (every[1:] == every[:-1]).any():
                self._drop("a key came again")
                return False
            self._hashes = [every]
        self._next_check = 2 * self._count
        return True

    def _drop(self, why: str) -> None:
        self.wrong = why
        self._hashes = []
        with self._lock:
            self._waiting.clear()

    def _work(self) -> None:
        """Decode every batch waiting, as one (so a worker that fell behind catches up in fewer, larger reads)."""
        with self._lock:
            parts = list(self._waiting)
            self._waiting.clear()
        if not parts or self.wrong:
            return
        try:
            errors = (parts[0] if len(parts) == 1 else joined(parts)).decode(self._decode)
        except Exception as exc:  # noqa: BLE001 - any refusal: the read's end decides, and raises it if it holds
            self._drop(f"the decoder refused a batch ({exc})")
            return
        if errors:
            self._drop("a batch holds a bad record")
