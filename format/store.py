"""The store contract and the registry that picks an implementation for a URL.

Publishing is safe only if the store offers two atomic operations:
``put_if_absent`` (manifests are create-only) and ``compare_and_swap`` (the
announcement moves only from the version the producer started from). Each
implementation documents how it provides them; a protocol that cannot is
opened read-only, so consumers can still read from it and a producer gets a
clear error instead of a silent race.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import ConfigError, UnsupportedStore


@dataclass(frozen=True)
class ObjectInfo:
    """One object in a listing; ``path`` is relative to the store root."""

    path: str
    size: int
    modified: datetime | None


class Store(ABC):
    """Bytes under one root URL. Paths are relative, ``/``-separated, never ``..``."""

    url: str

    @abstractmethod
    def read(self, path: str) -> bytes:
        """The object's bytes; ObjectNotFound if absent."""

    @abstractmethod
    def read_tagged(self, path: str) -> tuple[bytes, str]:
        """The bytes and a tag that ``compare_and_swap`` accepts as ``expected``."""

    def read_if_changed(self, path: str, tag: str | None) -> tuple[bytes, str] | None:
        """None when the object still has ``tag``: what a cheap poll asks.

        Stores that can ask the server conditionally (S3: If-None-Match)
        override this so an unchanged poll transfers no body.
        """
        data, new_tag = self.read_tagged(path)
        return None if new_tag == tag else (data, new_tag)

    @abstractmethod
    def write(self, path: str, data: bytes | bytearray) -> None:
        """Write an object under a name nobody else uses (blobs); readers never see it torn."""

    @abstractmethod
    def put_if_absent(self, path: str, data: bytes) -> bool:
        """Create the object only if no object has that path; False if one does.

        A store whose client may resend a request on its own (S3 over aiohttp)
        may report True when the object already holds exactly ``data``: the
        resent copy of our own write. Callers never write the same bytes twice
        on purpose (manifests and announcements name their producer and time).
        """

    @abstractmethod
    def compare_and_swap(self, path: str, data: bytes, expected: str | None) -> str | None:
        """Replace the object only if its tag is still ``expected`` (None: only if absent).

        Returns the new tag, or None when another writer changed it first.
        """

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove the object; a missing object is not an error."""

    def temporaries(self, prefix: str) -> list[ObjectInfo]:
        """Files a write in progress uses before its object appears, directly under ``prefix`` (a folder).

        Left behind only when a writer is killed mid-write; retention removes
        them once they are older than any write takes. Stores whose writes are
        single requests (S3, memory) have none.
        """
        return []

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects whose path starts with ``prefix`` (a folder name ending in ``/``)."""

    @abstractmethod
    def child(self, name: str) -> Store:
        """The same store rooted one folder deeper."""

    def check_publishable(self) -> None:
        """Raise UnsupportedStore when this store cannot be published to safely; a producer asks first."""

    def exists(self, path: str) -> bool:
        from .errors import ObjectNotFound

        try:
            self.read_tagged(path)
        except ObjectNotFound:
            return False
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class ReadOnlyStore(Store, ABC):
    """A store on a protocol without atomic writes: readers only."""

    def _refuse(self, operation: str) -> UnsupportedStore:
        return UnsupportedStore(
            f"{self.url} cannot be published to: its protocol offers no atomic {operation}, "
            "so two producers could overwrite each other. Publish to a local path, "
            "memory:// or s3://, and read from here.",
            url=self.url,
        )

    def check_publishable(self) -> None:
        raise self._refuse("create-only write and compare-and-swap")

    def write(self, path: str, data: bytes | bytearray) -> None:
        raise self._refuse("write")

    def put_if_absent(self, path: str, data: bytes) -> bool:
        raise self._refuse("create-only write")

    def compare_and_swap(self, path: str, data: bytes, expected: str | None) -> str | None:
        raise self._refuse("compare-and-swap")

    def delete(self, path: str) -> None:
        raise self._refuse("delete")


# protocol -> (module, class, extra to install); imported only when used.
_REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "file": ("combe.format.store_local", "LocalStore", None),
    "memory": ("combe.format.store_memory", "MemoryStore", None),
    "s3": ("combe.format.store_s3", "S3Store", "s3"),
    "s3a": ("combe.format.store_s3", "S3Store", "s3"),
}
_FALLBACK = ("combe.format.store_fsspec", "FsspecStore", None)


def split_url(url: str) -> tuple[str, str]:
    """``(protocol, path)``; a bare path is ``file``."""
    if not isinstance(url, str) or not url:
        raise ConfigError("a store URL is required (a path, file://, memory:// or s3://bucket/prefix)")
    if "://" in url:
        protocol, _, path = url.partition("://")
        return protocol.lower(), path
    return "file", url


def open_store(url: str, storage_options: dict[str, Any] | None = None) -> Store:
    """The Store for ``url``, with ``storage_options`` passed to the fsspec filesystem."""
    protocol, path = split_url(url)
    module_name, class_name, extra = _REGISTRY.get(protocol, _FALLBACK)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: pip install 'combe[{extra}]'" if extra else ""
        raise ConfigError(f"{protocol}:// stores need a package that is missing ({exc.name}){hint}") from exc
    store_class = getattr(module, class_name)
    store: Store = store_class(protocol, path, dict(storage_options or {}))
    return store
