"""A dataset in a store: typed reads and writes of its announcement, pin, manifests and blobs.

This is the one place where format meets store I/O; producer and consumer
both go through it, so the rules (create-only manifests, compare-and-swap
announcements, sha256 checked before a blob is used) live here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .codec import verified_ipc, verify
from .errors import DatasetNotFound, FormatError, ObjectNotFound
from .layout import ANNOUNCED, VERSIONS_DIR, check_dataset_name, manifest_path, manifest_version
from .manifest import BlobRef, Manifest, Pointer
from .store import Store, open_store


@dataclass(frozen=True)
class Announced:
    """The announcement as read, with the tag a compare-and-swap must quote."""

    pointer: Pointer | None
    tag: str | None

    @property
    def version(self) -> int | None:
        return self.pointer.version if self.pointer else None


class Dataset:
    """One dataset under ``<store>/<name>/``."""

    def __init__(self, store: Store, name: str) -> None:
        self.name = check_dataset_name(name)
        self.root = store
        self.store = store.child(name)

    @classmethod
    def open(cls, url: str, name: str, storage_options: dict[str, Any] | None = None) -> Dataset:
        return cls(open_store(url, storage_options), name)

    @property
    def url(self) -> str:
        return self.store.url

    def _pointer(self, data: bytes, path: str) -> Pointer:
        pointer = Pointer.from_json(data, f"{self.url}/{path}")
        if pointer.dataset != self.name:
            raise FormatError(f"{self.url}/{path} names dataset {pointer.dataset!r}, not {self.name!r}",
                              path=path)
        return pointer

    def announced(self) -> Announced:
        """The current announcement; ``pointer`` is None before the first publish."""
        try:
            data, tag = self.store.read_tagged(ANNOUNCED)
        except ObjectNotFound:
            return Announced(None, None)
        return Announced(self._pointer(data, ANNOUNCED), tag)

    def poll_announced(self, tag: str | None) -> Announced | None:
        """None if the announcement still has ``tag``: one small conditional request."""
        try:
            changed = self.store.read_if_changed(ANNOUNCED, tag)
        except ObjectNotFound:
            return None if tag is None else Announced(None, None)
        if changed is None:
            return None
        return Announced(self._pointer(changed[0], ANNOUNCED), changed[1])

    def require_announced(self) -> Pointer:
        pointer = self.announced().pointer
        if pointer is None:
            raise DatasetNotFound(f"dataset {self.name!r} has no announced version at {self.url}; "
                                  "publish it first (combe publish)", dataset=self.name)
        return pointer

    def announce(self, pointer: Pointer, expected_tag: str | None) -> str | None:
        """Compare-and-swap the announcement; the new tag, or None if another producer moved it."""
        return self.store.compare_and_swap(ANNOUNCED, pointer.to_json(), expected_tag)

    def manifest(self, version: int) -> Manifest:
        path = manifest_path(version)
        try:
            data = self.store.read(path)
        except ObjectNotFound as exc:
            raise DatasetNotFound(f"dataset {self.name!r} has no version {version} at {self.url} "
                                  "(never published, or removed by gc)", dataset=self.name) from exc
        manifest = Manifest.from_json(data, f"{self.url}/{path}")
        if manifest.version != version or manifest.dataset != self.name:
            raise FormatError(f"{self.url}/{path} holds version {manifest.version} of {manifest.dataset!r}",
                              path=path)
        return manifest

    def create_manifest(self, manifest: Manifest) -> bool:
        """Write the manifest create-only; False if that version already exists."""
        return self.store.put_if_absent(manifest_path(manifest.version), manifest.to_json())

    def versions(self) -> list[int]:
        """Every version with a manifest in the store, ascending."""
        found = (manifest_version(info.path) for info in self.store.list(f"{VERSIONS_DIR}/"))
        return sorted(v for v in found if v is not None)

    def read_blob(self, ref: BlobRef) -> bytes:
        """The blob's compressed bytes, verified against the manifest's sha256."""
        data = self.store.read(ref.path)
        verify(data, ref.sha256, path=f"{self.url}/{ref.path}")
        return data

    def blob_ipc(self, ref: BlobRef) -> bytes | bytearray:
        """The Arrow IPC file inside a blob, verified against the manifest's sha256 (see verified_ipc)."""
        return verified_ipc(self.store.read(ref.path), ref.sha256, path=f"{self.url}/{ref.path}")

    def write_blob(self, path: str, data: bytes) -> None:
        self.store.write(path, data)
