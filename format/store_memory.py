"""``memory://`` stores: fsspec's in-process memory filesystem.

fsspec keeps one memory filesystem per process, so every Store opened on the
same ``memory://`` URL sees the same objects; that is what lets a producer and
a consumer in one process (tests, the quick start) share a dataset. The lock
that makes create-only writes and compare-and-swap atomic is therefore
per-process too.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import fsspec

from .errors import ObjectNotFound
from .store import ObjectInfo, Store
from .store_local import content_tag

# One lock for the one process-wide memory filesystem (see module docstring).
_LOCK = threading.Lock()


class MemoryStore(Store):
    def __init__(self, protocol: str, path: str, storage_options: dict[str, Any]) -> None:
        self.fs = fsspec.filesystem("memory")
        self.root = "/" + path.strip("/")
        self.url = f"memory://{path.strip('/')}"

    def _path(self, path: str) -> str:
        return f"{self.root.rstrip('/')}/{path}"

    def read(self, path: str) -> bytes:
        try:
            data: bytes = self.fs.cat_file(self._path(path))
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{self.url}/{path} does not exist", url=self.url) from exc
        return data

    def read_tagged(self, path: str) -> tuple[bytes, str]:
        data = self.read(path)
        return data, content_tag(data)

    def write(self, path: str, data: bytes | bytearray) -> None:
        self.fs.pipe_file(self._path(path), data)

    def put_if_absent(self, path: str, data: bytes) -> bool:
        with _LOCK:
            if self.fs.exists(self._path(path)):
                return False
            self.fs.pipe_file(self._path(path), data)
            return True

    def compare_and_swap(self, path: str, data: bytes, expected: str | None) -> str | None:
        with _LOCK:
            try:
                current: str | None = content_tag(self.fs.cat_file(self._path(path)))
            except FileNotFoundError:
                current = None
            if current != expected:
                return None
            self.fs.pipe_file(self._path(path), data)
            return content_tag(data)

    def delete(self, path: str) -> None:
        try:
            self.fs.rm_file(self._path(path))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[ObjectInfo]:
        folder = self._path(prefix).rstrip("/")
        if not self.fs.isdir(folder):
            return []
        found = []
        for info in self.fs.ls(folder, detail=True):
            if info["type"] != "file":
                continue
            created = info.get("created")
            found.append(ObjectInfo(
                path=f"{prefix}{info['name'].rsplit('/', 1)[-1]}",
                size=int(info["size"]),
                modified=datetime.fromtimestamp(created, tz=timezone.utc) if created else None,
            ))
        return sorted(found, key=lambda item: item.path)

    def child(self, name: str) -> MemoryStore:
        return MemoryStore("memory", f"{self.root.strip('/')}/{name}", {})
