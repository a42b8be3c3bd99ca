"""Read-only stores on any other fsspec protocol (http, gcs, abfs, ...).

These protocols are read through fsspec but offer combe no create-only write
or compare-and-swap, so publishing to them is refused (see ReadOnlyStore).
"""

from __future__ import annotations

import hashlib
from typing import Any

import fsspec

from .errors import ConfigError, ObjectNotFound, StoreUnavailable
from .store import ObjectInfo, ReadOnlyStore


class FsspecStore(ReadOnlyStore):
    def __init__(self, protocol: str, path: str, storage_options: dict[str, Any]) -> None:
        self.protocol = protocol
        self.options = storage_options
        self.path = path.rstrip("/")
        self.url = f"{protocol}://{self.path}"
        try:
            # url_to_fs, not filesystem(protocol): it gives the path in the form the filesystem wants
            # (whole URLs for http) and opens chained URLs such as simplecache::gcs://bucket/prefix.
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **storage_options)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"cannot open {protocol}:// stores: {exc}") from exc
        self.root = self.root.rstrip("/")

    def read(self, path: str) -> bytes:
        try:
            data: bytes = self.fs.cat_file(f"{self.root}/{path}")
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{self.url}/{path} does not exist", url=self.url) from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {self.url}/{path}: {exc}", url=self.url) from exc
        return data

    def read_tagged(self, path: str) -> tuple[bytes, str]:
        data = self.read(path)
        return data, hashlib.sha256(data).hexdigest()[:32]

    def list(self, prefix: str) -> list[ObjectInfo]:
        try:
            entries = self.fs.ls(f"{self.root}/{prefix}", detail=True)
        except FileNotFoundError:
            return []
        return sorted(
            (ObjectInfo(f"{prefix}{e['name'].rstrip('/').rsplit('/', 1)[-1]}", int(e.get("size") or 0), None)
             for e in entries if e.get("type") == "file"),
            key=lambda info: info.path,
        )

    def child(self, name: str) -> FsspecStore:
        return FsspecStore(self.protocol, f"{self.path}/{name}", self.options)
