"""Kafka batches held until a read ends, and decoded ahead of it while few keys repeat.

A compacted topic's cycle decodes only the latest message of each key, once
the read has ended (Publisher._collect): a message superseded in the same
read is never decoded, as if the log cleaner had removed it, so it neither
shapes the schema nor counts as a bad record. Most messages of a topic are
their key's latest, though, so each batch is decoded at once, on a worker
thread, while the client waits on the brokers, and the read's end finds its
decoding done. What the superseded messages brought is then taken out:

- their rows lose to their key's later message in the fold, as any earlier
  record of a key does;
- their bad records are not reported; a bad latest message drops the guess;
- the types they brought must change nothing: the superseded messages and
  the latest messages of the same keys are decoded again on their own, and
  the former's types must already fit the latter's (if they fit those, they
  fit all the latest messages', so the schema is the one the latest messages
  alone make; values read in a wider type than they were at the time come
  out the same, as every chunked decoding relies on).

The guess is dropped when it cannot be used, and the read's end decodes the
latest messages as it would have from the batches still held: more than
REPEATS of the keys read so far came again (the check at the end would cost
what the guess saves), a key that comes again collides with another by its
64-bit hash, a superseded message's types do not fit, a latest message is
bad, the decoder refuses a batch, or a second stream appears. The changes
come out the same either way.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from combe.format.errors import BadRecordError
from combe.format.index import one_array

from .decode import Decode, Places
from .fold import Changes

log = logging.getLogger(__name__)

# Above this share of the keys read coming again, batches are not decoded ahead (nor checked at the read's end).
REPEATS = 0.05


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
        """The messages at ``chosen`` (increasing indices into these messages), in that order."""
        return Held(self.stream, self.keys.take(pa.array(chosen)), _take(self.values, chosen),
                    None if self.deleted is None else self.deleted[chosen], self.clean[chosen],
                    self.partitions[chosen], self.offsets[chosen])


def _take(values: pa.Array | pa.ChunkedArray, chosen: np.ndarray) -> pa.Array:
    """``values`` at increasing indices ``chosen``, as one array: chunk by chunk (Arrow's take over a chunked
    array joins every chunk first, a copy of all the values for a few of them)."""
    if isinstance(values, pa.Array):
        return values.take(pa.array(chosen))
    ends = np.cumsum([len(chunk) for chunk in values.chunks])
    cuts = np.searchsorted(chosen, ends)
    pieces, start, first = [], 0, 0
    for chunk, end, cut in zip(values.chunks, ends.tolist(), cuts.tolist()):
        if cut > start:
            pieces.append(chunk.take(pa.array(chosen[start:cut] - first)))
        start, first = cut, end
    return pa.concat_arrays(pieces) if pieces else pa.array([], values.type)


def joined(parts: list[Held]) -> Held:
    """Batches of one stream as one; its values stay chunked (``take`` or ``one_array`` copies them once)."""
    first = parts[0]
    return Held(first.stream, pa.concat_arrays([part.keys for part in parts]),
                pa.chunked_array([part.values for part in parts]),
                None if first.deleted is None else np.concatenate([part.deleted for part in parts]),
                np.concatenate([part.clean for part in parts]), np.concatenate([part.partitions for part in parts]),
                np.concatenate([part.offsets for part in parts]))


class Ahead:
    """Decodes held batches on a worker thread as they arrive, into changes of its own, while few keys repeat (see
    the module's docstring); ``result`` hands over those changes if what the superseded messages brought changes
    nothing."""

    def __init__(self, decoding: Callable[[], Decode]) -> None:
        """``decoding`` makes a Decode into changes of no records, over the cycle's schema and settings."""
        self._decoding = decoding
        self._decode = decoding()
        self._errors: list[BadRecordError] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="combe-decode-ahead")
        self._waiting: deque[Held] = deque()
        self._lock = threading.Lock()
        self._last: Future[None] | None = None
        self._stream: str | None = None
        # Hashes of the keys read, batch by batch in arrival order; sorted together at each check.
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
        # often is found out at its first batches.
        if self._count >= self._next_check:
            self._next_check = 2 * self._count
            every = np.sort(np.concatenate(self._hashes))
            if np.count_nonzero(every[1:] == every[:-1]) > REPEATS * self._count:
                self._drop(f"more than {REPEATS:.0%} of the keys read came again")
                return
        with self._lock:
            self._waiting.append(part)
        self._last = self._pool.submit(self._work)

    def result(self, held: list[Held]) -> Changes | None:
        """The changes decoded ahead, once the worker is done, if what the superseded messages of ``held`` (the
        read's batches) brought changes nothing; else None (and the worker's changes are dropped)."""
        try:
            if not self.wrong and self._last is not None:
                self._last.result()
            if not self.wrong and held:
                try:
                    self._check(held)
                except Exception as exc:  # noqa: BLE001 - any refusal: the read's end decides
                    self._drop(f"the check of what superseded messages brought failed ({exc})")
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

    def _check(self, held: list[Held]) -> None:
        """Drop the guess unless taking out what the superseded messages of ``held`` brought changes nothing."""
        if any(part.keys.null_count for part in held):
            self._drop("a message has no key")  # a bad record of its own, whatever comes after it
            return
        hashes = np.concatenate(self._hashes)
        order = np.argsort(hashes, kind="stable")  # equal keys stay in arrival order
        again = np.flatnonzero(hashes[order[1:]] == hashes[order[:-1]])
        if not len(again):
            if self._errors:
                self._drop("a latest message is bad")
            return
        every = joined(held)  # only where keys repeat: the keys of every batch, copied into one array
        earlier, later = order[again], order[again + 1]
        if not pc.all(pc.equal(every.keys.take(pa.array(earlier)), every.keys.take(pa.array(later)))).as_py():
            self._drop("two keys have the same hash")
            return
        superseded = np.sort(earlier)
        latest = np.setdiff1d(later, earlier, assume_unique=True)  # the last of each run of equal keys, sorted
        number = self._decode.source.number
        gone = {(p, number(every.stream, p, o))
                for p, o in zip(every.partitions[superseded].tolist(), every.offsets[superseded].tolist())}
        if any((error.partition, error.offset) not in gone for error in self._errors):
            self._drop("a latest message is bad")
            return
        if self._decode.changes.retyped or self._decode.changes.empty_keys:
            self._drop("the read changes a column's type or holds an empty key")
            return
        theirs, own = self._decoding(), self._decoding()
        every.take(latest).decode(theirs)
        every.take(superseded).decode(own)
        if not theirs.changes.holds(own.changes.schema.columns):
            self._drop("a superseded message brought a type its key's latest message does not have")

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
            self._errors += (parts[0] if len(parts) == 1 else joined(parts)).decode(self._decode)
        except Exception as exc:  # noqa: BLE001 - any refusal: the read's end decides, and raises it if it holds
            self._drop(f"the decoder refused a batch ({exc})")
