"""A local directory of verified blobs, kept decompressed and loaded by memory-mapping.

A blob is downloaded and checked against its manifest's sha256 once, then its
Arrow IPC file is kept as ``<sha256>.arrow`` (named by the compressed blob's
sha256, so one name only ever holds one content) beside ``<sha256>.check``, a
small JSON record of what was written: the file's size, the XXH3-64 hash of
each 16 MiB piece of it, its row count and a digest of its Arrow schema. Later
loads, in this process or another on the host, map the file: no download, no
decompression, and the page cache is shared between the processes.

Checking a cached file. The manifest's sha256 is of the compressed blob, so it
cannot check the decompressed file; the ``.check`` record can, and every open
checks it all before a single byte of the file is parsed: the size (a
truncated or torn file), then the XXH3-64 of every piece (a flipped bit
anywhere: Arrow trusts the offsets and lengths it maps, so a damaged file
could be served as wrong data or crash the process in a kernel that reads
out of bounds), then, once Arrow has read the footer and batch headers, the
row count and the schema digest. XXH3, not sha256 or CRC-32: the file was
written from a blob whose sha256 was checked, so the question is damage, not
tampering, and XXH3 reads about 15 GB/s on one core where CRC-32 (zlib) reads
1.3 and sha256 under 1. The pieces are hashed on every core at once, so a
restart from the cache stays over 20 times faster than a cold load
(bench/scenarios/cold_start.py measures both: ``cache_restart_speedup``).

A producer (``combe publish --cache-dir``) keeps the blobs of its announced
state here, written as they are encoded (``incoming``, ``adopt``: the piece
hashes taken as written, never read back), and records in a snapshot's
``.check`` the state checksum it computed or verified for its rows
(``vouch``), so its next run need not hash every row again: the hash of the
whole file, checked on every open, proves it is that blob.

A file that fails a check is removed and the blob fetched again. Files are
never fsynced: after a power loss a file may be empty or short under its final
name, and the checks catch exactly that.

Several processes share a directory safely. Files are written under a temporary
name and renamed into place (atomic: a reader sees a whole file or none), the
``.check`` record first, so a data file always has its record (or the reader
treats it as missing). Two processes fetching one blob at once both download
and write it (there is no lock to wait on); the contents are identical, the
last rename wins, and a process that mapped the first copy keeps reading it.

Bounded size (``max_bytes``): after each load the least recently used files
(by modification time, which every open touches) are removed until the ``.arrow``
files fit, skipping the files any View this process still holds was built from.
Those are protected even when they alone pass the bound.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pyarrow as pa
import xxhash

from .codec import read_ipc
from .dataset import Dataset
from .errors import ConfigError, FormatError
from .manifest import BlobRef, Manifest

log = logging.getLogger(__name__)

DATA = ".arrow"
CHECK = ".check"
TEMP_PREFIX = ".incoming-"
# A temporary file this old was left by a process killed while writing it (writes take seconds).
STALE_SECONDS = 3600.0
# A cached file is hashed in pieces of this many bytes, spread over the cores.
PIECE = 16 << 20


@dataclass(frozen=True)
class _Record:
    """What was written for one blob: enough to tell a damaged cache file from a whole one."""

    blob: str  # the sha256 of the compressed blob, as its manifest records it
    size: int
    xxh3_64: list[str]  # XXH3-64 of each PIECE bytes of the file, 16 hex digits each
    rows: int
    schema: str  # sha256 of the serialised Arrow schema, first 32 hex digits
    # A producer's word that the rows of this snapshot (index columns aside) sum to this state checksum:
    # it computed or verified it (format/checksum.py), so a later run need not hash every row again.
    state_checksum: str | None = None

    @classmethod
    def of(cls, blob: str, ipc: bytes | bytearray, table: pa.Table) -> _Record:
        return cls(blob, len(ipc), _content_hashes(ipc), table.num_rows, _schema_digest(table.schema))

    @classmethod
    def load(cls, path: Path) -> _Record:
        fields = json.loads(path.read_bytes())
        checksum = fields["state_checksum"]  # required, like every field: a flipped bit in its name is damage
        return cls(str(fields["blob"]), int(fields["size"]), [str(d) for d in fields["xxh3_64"]],
                   int(fields["rows"]), str(fields["schema"]), None if checksum is None else str(checksum))

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


class _Damaged(Exception):
    """A cached file that does not match its record (never leaves this module)."""


def _schema_digest(schema: pa.Schema) -> str:
    return hashlib.sha256(schema.serialize()).hexdigest()[:32]


def _content_hashes(data: bytes | bytearray | pa.Buffer) -> list[str]:
    """The XXH3-64 of each ``PIECE`` bytes of ``data``, hashed on every core at once.

    xxhash releases the GIL while it hashes, so on two cores a file is checked
    in about half the time one thread takes.
    """
    view = memoryview(data)
    pieces = [view[start:start + PIECE] for start in range(0, len(view), PIECE)] or [view]
    digests = [""] * len(pieces)
    workers = min(len(pieces), os.cpu_count() or 1)

    def work(first: int) -> None:
        for index in range(first, len(pieces), workers):
            digests[index] = xxhash.xxh3_64_hexdigest(pieces[index])

    threads = [threading.Thread(target=work, args=(i,), name="combe-xxh3", daemon=True) for i in range(1, workers)]
    for thread in threads:
        thread.start()
    work(0)
    for thread in threads:
        thread.join()
    return digests


class Incoming:
    """A cache file being written, its piece hashes (as ``_content_hashes`` gives them) taken as it comes,
    so it is never read back.

    A file-like sink (``write``) whose bytes a thread of its own writes and
    hashes: ``write`` only queues them, so copying a blob's IPC file to disk
    overlaps with compressing it instead of adding to it. Queuing without a
    copy is safe because what is written is never changed afterwards: an
    Arrow IPC writer hands a file ``bytes`` objects and Arrow buffers, both
    immutable and kept alive by the queued view. A write that fails (a full
    disk) stops the copy and is logged once, never raised: the cache is an
    optimisation, and the caller's real work (a publish) must not fail for
    it. ``close`` or ``discard`` waits for the thread, and one of them must
    be called.
    """

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
        self.path = Path(name)
        self._handle = os.fdopen(fd, "wb")
        self.size = 0
        self._hashes: list[str] = []
        self._piece = xxhash.xxh3_64()  # the piece being written, PIECE bytes at most
        self._filled = 0
        self.failed: OSError | None = None
        self._queue: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._drain, name="combe-cache-write", daemon=True)
        self._writer.start()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self.size += len(view)
        self._queue.put(view)

    def _drain(self) -> None:
        while (view := self._queue.get()) is not None:
            if self.failed is None:
                self._store(view)

    def _store(self, view: memoryview) -> None:
        try:
            self._handle.write(view)
        except OSError as exc:
            self.failed = exc
            log.warning("cache file %s: %s; it will not be kept", self.path, exc)
            return
        while len(view):
            part = view[:PIECE - self._filled]
            self._piece.update(part)
            self._filled += len(part)
            view = view[len(part):]
            if self._filled == PIECE:
                self._hashes.append(self._piece.hexdigest())
                self._piece, self._filled = xxhash.xxh3_64(), 0

    def _written(self) -> None:
        """Wait until every queued byte is written (or the copy has failed)."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()

    def hashes(self) -> list[str]:
        """The XXH3-64 of each piece written (the last one short, or the empty file's)."""
        self._written()
        return [*self._hashes, self._piece.hexdigest()] if self._filled or not self._hashes else list(self._hashes)

    def discard(self) -> None:
        """Close and remove the file (what it was written for did not happen)."""
        self.failed = self.failed or OSError("discarded")
        self.close()

    def close(self) -> bool:
        """Finish the file; False (and the file removed) if it could not be written whole."""
        self._written()
        if not self._handle.closed:
            try:
                self._handle.close()
            except OSError as exc:
                self.failed = self.failed or exc
        if self.failed is not None:
            self.path.unlink(missing_ok=True)
            return False
        return True


class BlobCache:
    """Blob tables for a Loader, from ``directory`` when they are there and whole, else fetched and kept."""

    def __init__(self, dataset: Dataset, directory: Path, *, max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ConfigError(f"cache_max_bytes={max_bytes}: give a size in bytes, 0 or more")
        self.dataset = dataset
        self.directory = directory
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fetched = 0  # bytes downloaded from the store (cache misses), for Loader's account of a load
        # The blobs each holder still alive in this process was built from. Weak keys: a View the
        # Consumer replaced and no reader holds any more drops out by itself, and its files with it.
        self._kept: weakref.WeakKeyDictionary[object, frozenset[str]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._remove_stale_temporaries()

    def path(self, ref: BlobRef) -> Path:
        return self.directory / f"{ref.sha256}{DATA}"

    def table(self, ref: BlobRef, owner: Manifest, dataset: Dataset | None = None) -> pa.Table:
        """The blob's table, mapped from the cache file; fetched, verified and cached first if needed.

        Either way it is checked against ``owner``, the manifest that references it. ``dataset`` is where the
        blob is fetched from when it is not this cache's own dataset (a shard of it: one cache serves every
        shard).
        """
        table = self._open(ref)
        if table is None:
            source = dataset or self.dataset
            location = f"{source.url}/{ref.path}"
            ipc = source.blob_ipc(ref)  # checked against the manifest's sha256
            self.fetched += ref.bytes
            fetched = read_ipc(ipc, path=location)
            self._store(ref, ipc, fetched)  # the blob is the one the manifest named, whatever the check below says
            # Map what was written, so the pages are shared with other processes; the in-memory copy
            # serves only if the file is already gone again (removed by another process's eviction).
            table = self._open(ref) or fetched
        owner.check_blob(table.schema, table.num_rows, ref, path=str(self.path(ref)))
        return table

    # -- reading -------------------------------------------------------------------

    def _open(self, ref: BlobRef) -> pa.Table | None:
        """The mapped table if the cached file is there and passes its checks; None otherwise."""
        data, check = self.path(ref), self._check_path(ref)
        try:
            table = self._checked(ref, _Record.load(check), pa.memory_map(str(data)))
        except FileNotFoundError:
            return None  # not cached (or removed meanwhile by another process)
        except (_Damaged, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cached blob %s failed its check (%s); fetching it again", data, exc)
            self._remove(ref.sha256)
            return None
        try:
            os.utime(data)  # the time of last use, for least-recently-used eviction
        except OSError:
            pass  # removed since it was mapped: the mapping stays valid
        return table

    def _checked(self, ref: BlobRef, record: _Record, mapped: pa.MemoryMappedFile) -> pa.Table:
        """The table of a cached file that matches its record; _Damaged says what does not."""
        if record.blob != ref.sha256:
            raise _Damaged(f"its record names blob {record.blob}")
        size = mapped.size()
        if size != record.size:
            raise _Damaged(f"it has {size} bytes where {record.size} were written")
        content = mapped.read_buffer()  # the mapping itself: nothing is copied
        digests = _content_hashes(content)
        if digests != record.xxh3_64:
            piece = next((i for i, (a, b) in enumerate(zip(digests, record.xxh3_64)) if a != b), len(digests))
            raise _Damaged(f"the XXH3-64 of its bytes from {piece * PIECE} on differ from what was written")
        try:
            table = read_ipc(content, path=str(self.path(ref)))
        except FormatError as exc:
            raise _Damaged(str(exc)) from exc
        if table.num_rows != record.rows or _schema_digest(table.schema) != record.schema:
            raise _Damaged("its rows or schema differ from what was written")
        return table

    # -- a producer's use ------------------------------------------------------------

    def vouched(self, ref: BlobRef) -> str | None:
        """The state checksum a producer recorded for this cached snapshot (``vouch``), or None."""
        try:
            record = _Record.load(self._check_path(ref))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return record.state_checksum if record.blob == ref.sha256 else None

    def vouch(self, ref: BlobRef, state_checksum: str) -> None:
        """Record that the rows of this cached snapshot sum to ``state_checksum``: the caller verified it
        against its manifest, on the table this cache gave it. Nothing happens if the blob is not cached."""
        check = self._check_path(ref)
        try:
            record = _Record.load(check)
        except (OSError, ValueError, KeyError, TypeError):
            return
        if record.blob == ref.sha256 and record.state_checksum != state_checksum:
            self._write(check, replace(record, state_checksum=state_checksum).to_json())

    def incoming(self) -> Incoming:
        """A cache file to write a blob's Arrow IPC file into as it is made (``adopt`` names it)."""
        return Incoming(self.directory)

    def adopt(self, incoming: Incoming, ref: BlobRef, rows: int, schema: pa.Schema, *,
              state_checksum: str | None = None) -> None:
        """Keep ``incoming`` (the IPC file, of ``rows`` and ``schema``, whose blob is ``ref``) as that blob's
        cache file; ``state_checksum`` as ``vouch`` would record it.

        Its record comes from the hashes taken as it was written: the file is
        never read back. A file whose writing failed is dropped (the blob is
        fetched from the store if a later run needs it).
        """
        if not incoming.close():
            return
        record = _Record(ref.sha256, incoming.size, incoming.hashes(), rows, _schema_digest(schema),
                         state_checksum)
        try:
            self._write(self._check_path(ref), record.to_json())
            os.replace(incoming.path, self.path(ref))  # atomic, after its record (see the module docstring)
        except (OSError, FormatError) as exc:
            incoming.path.unlink(missing_ok=True)
            log.warning("blob cache %s: cannot keep %s (%s); a later run fetches it from the store",
                        self.directory, ref.path, exc)
            return

    def _check_path(self, ref: BlobRef) -> Path:
        return self.directory / f"{ref.sha256}{CHECK}"

    # -- writing -------------------------------------------------------------------

    def _store(self, ref: BlobRef, ipc: bytes | bytearray, table: pa.Table) -> None:
        """Write the record, then the data file, each under a temporary name renamed into place."""
        record = _Record.of(ref.sha256, ipc, table)
        self._write(self._check_path(ref), record.to_json())
        self._write(self.path(ref), ipc)

    def _write(self, path: Path, content: bytes | bytearray) -> None:
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            os.replace(temp, path)  # atomic: other processes see the whole file or the previous one
        except OSError as exc:
            Path(temp).unlink(missing_ok=True)
            raise FormatError(f"cannot write cache file {path}: {exc}; check the space and permissions "
                              f"of the cache directory {self.directory}", path=str(path)) from exc

    # -- bounding ------------------------------------------------------------------

    def keep(self, holder: object, blobs: Iterable[str], *, extends: object | None = None) -> None:
        """Spare ``blobs`` (their sha256s) from eviction while ``holder`` lives (a consumer's View, a
        producer's Publisher), and the blobs kept for ``extends`` too (what ``holder`` was built on)."""
        kept = set(blobs)
        with self._lock:
            if extends is not None:
                kept |= self._kept.get(extends, frozenset())
            self._kept[holder] = frozenset(kept)

    def evict(self) -> None:
        """Remove least recently used files no View alive in this process needs, until the bound holds."""
        if self.max_bytes is None:
            return
        try:
            files = sorted(self._data_files())
        except OSError as exc:  # the version is served already; a cache that cannot shrink only wastes disk
            log.warning("blob cache %s: cannot list it to evict (%s)", self.directory, exc)
            return
        total = sum(size for _, _, size in files)
        if total <= self.max_bytes:
            return
        with self._lock:
            # A copy: the weak dictionary loses entries whenever a View is collected, even mid-iteration.
            needed = frozenset().union(*list(self._kept.values()))
        removed = 0
        for _, sha256, size in files:
            if total <= self.max_bytes:
                break
            if sha256 in needed:
                continue
            # Unlinking a file another process has mapped is safe on Linux (and macOS): the mapping
            # keeps the file's pages until it is unmapped; only the name goes, and a later open
            # finds nothing and fetches the blob again. (Windows refuses; the file then stays.)
            if self._remove(sha256):
                total -= size
                removed += 1
        if removed:
            log.info("blob cache %s: evicted %d file(s), %d bytes kept", self.directory, removed, total)
        if total > self.max_bytes:
            log.info("blob cache %s holds %d bytes, over its bound of %d: the versions in use need them",
                     self.directory, total, self.max_bytes)

    def _data_files(self) -> Iterator[tuple[float, str, int]]:
        """(last use, sha256, bytes) of every cached data file."""
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.endswith(DATA) and not entry.name.startswith("."):
                    try:
                        stat = entry.stat()
                    except FileNotFoundError:
                        continue  # removed meanwhile by another process
                    yield stat.st_mtime, entry.name[:-len(DATA)], stat.st_size

    def _remove(self, sha256: str) -> bool:
        """Remove a blob's data file and then its record; False if the data file cannot be removed."""
        try:
            (self.directory / f"{sha256}{DATA}").unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove cached blob %s%s from %s: %s", sha256, DATA, self.directory, exc)
            return False
        (self.directory / f"{sha256}{CHECK}").unlink(missing_ok=True)
        return True

    def _remove_stale_temporaries(self) -> None:
        """Remove files left half-written by killed processes; a writer renames its file within seconds."""
        cutoff = time.time() - STALE_SECONDS
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.startswith(TEMP_PREFIX):
                    try:
                        if entry.stat().st_mtime < cutoff:
                            os.unlink(entry.path)
                    except FileNotFoundError:
                        pass
