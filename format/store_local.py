"""Stores on the local filesystem (a path or ``file://``).

Create-only writes link a fully written temporary file into place
(``os.link`` fails if the name exists), so a reader never sees a partial
object and two writers cannot both succeed. Compare-and-swap holds an
exclusive ``flock`` on a lock file beside the object while it compares and
renames, which serialises producers on one host (and on NFS with working
locks); the rename itself is atomic, so readers need no lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ObjectNotFound, StoreError
from .store import ObjectInfo, Store

# A write goes to ``.<name>.<random>.tmp`` beside its target, then is renamed or linked into place.
TEMP_SUFFIX = ".tmp"


def content_tag(data: bytes) -> str:
    """A tag derived from the bytes themselves, for stores without ETags."""
    return hashlib.sha256(data).hexdigest()[:32]


class LocalStore(Store):
    def __init__(self, protocol: str, path: str, storage_options: dict[str, Any]) -> None:
        self.root = Path(path).expanduser().absolute()
        self.url = str(self.root)

    def _path(self, path: str) -> Path:
        return self.root / path

    def read(self, path: str) -> bytes:
        try:
            return self._path(path).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{self.root / path} does not exist", url=self.url) from exc
        except OSError as exc:
            raise StoreError(f"cannot read {self.root / path}: {exc.strerror}", url=self.url) from exc

    def read_tagged(self, path: str) -> tuple[bytes, str]:
        data = self.read(path)
        return data, content_tag(data)

    def _write_temp(self, target: Path, data: bytes | bytearray) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Mode 0666, as for any file a program creates: the umask (and a default ACL) decides who may read it.
        # mkstemp's 0600 would shut out consumers running as another user. O_EXCL: a random name no one else
        # is writing, as mkstemp's.
        name = target.parent / f".{target.name}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            os.unlink(name)
            raise
        return name

    def write(self, path: str, data: bytes | bytearray) -> None:
        target = self._path(path)
        try:
            temp = self._write_temp(target, data)
            os.replace(temp, target)
        except OSError as exc:
            raise StoreError(f"cannot write {target}: {exc.strerror}", url=self.url) from exc

    def put_if_absent(self, path: str, data: bytes) -> bool:
        target = self._path(path)
        try:
            temp = self._write_temp(target, data)
        except OSError as exc:
            raise StoreError(f"cannot write {target}: {exc.strerror}", url=self.url) from exc
        try:
            os.link(temp, target)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot create {target}: {exc.strerror}", url=self.url) from exc
        finally:
            os.unlink(temp)

    def compare_and_swap(self, path: str, data: bytes, expected: str | None) -> str | None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        lock_path = target.with_name(f".{target.name}.lock")
        try:
            with open(lock_path, "a+b") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    current: str | None = content_tag(target.read_bytes())
                except FileNotFoundError:
                    current = None
                if current != expected:
                    return None
                temp = self._write_temp(target, data)
                os.replace(temp, target)
                return content_tag(data)
        except OSError as exc:
            raise StoreError(f"cannot swap {target}: {exc.strerror}", url=self.url) from exc

    def delete(self, path: str) -> None:
        try:
            self._path(path).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot delete {self.root / path}: {exc.strerror}", url=self.url) from exc

    def temporaries(self, prefix: str) -> list[ObjectInfo]:
        """The temporary files of writes (``_write_temp``) that were never renamed into place."""
        return self._scan(prefix, lambda name: name.startswith(".") and name.endswith(TEMP_SUFFIX))

    def _scan(self, prefix: str, wanted: Callable[[str], bool]) -> list[ObjectInfo]:
        folder = self._path(prefix)
        if not folder.is_dir():
            return []
        found = []
        for entry in os.scandir(folder):
            if not wanted(entry.name):
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except FileNotFoundError:
                continue  # renamed or removed meanwhile by the writer
            found.append(ObjectInfo(
                path=f"{prefix}{entry.name}",
                size=stat.st_size,
                modified=datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc),
            ))
        return sorted(found, key=lambda info: info.path)

    def list(self, prefix: str) -> list[ObjectInfo]:
        return self._scan(prefix, lambda name: not name.startswith("."))

    def child(self, name: str) -> LocalStore:
        return LocalStore("file", str(self.root / name), {})
