"""A dataset in a store: typed reads and writes of its announcement, pin, manifests and blobs.

This is the one place where format meets store I/O; producer and consumer
both go through it, so the rules (create-only manifests, compare-and-swap
announcements, sha256 checked before a blob is used) live here once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .codec import verified_ipc, verify
from .errors import ConflictError, DatasetNotFound, FormatError, ObjectNotFound
from .layout import ANNOUNCED, VERSIONS_DIR, check_dataset_name, manifest_path, manifest_version
from .manifest import BlobRef, Manifest, Pointer
from .store import Store, open_store

log = logging.getLogger(__name__)

# Compare-and-swaps of announced.json an update may lose (each to another writer) before it gives up.
ANNOUNCE_ATTEMPTS = 5


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

    def update_announced(self, change: Callable[[Announced], Pointer | None], *, doing: str,
                         current: Announced | None = None, attempts: int = ANNOUNCE_ATTEMPTS) -> Pointer | None:
        """Move the announcement to ``change(announced)`` by compare-and-swap; the pointer announced after.

        ``change`` is shown the announcement as it is (``current`` first, if
        given, else a fresh read). It returns the pointer to write, None when
        the announcement already says what the caller wants, or raises to give
        up. A swap lost to another writer (a producer announcing, ``combe pin``)
        re-reads the announcement and asks ``change`` again, so every write is
        decided on what it replaces. After ``attempts`` lost swaps a
        ConflictError says the announcement kept changing while ``doing``.
        """
        announced = current if current is not None else self.announced()
        for attempt in range(attempts):
            if attempt:
                announced = self.announced()
            pointer = change(announced)
            if pointer is None:
                return announced.pointer
            if self.announce(pointer, announced.tag) is not None:
                return pointer
        raise ConflictError(f"{self.name}: announced.json kept changing while {doing} ({attempts} attempts); "
                            "nothing was changed by this run, try again", dataset=self.name,
                            version=announced.version or 0)

    def set_pin(self, version: int | None) -> tuple[Pointer, int | None]:
        """Set the store-wide pin to ``version`` (None: unpin); the pointer announced after, and the pin before.

        The pin is the ``pin`` field of ``announced.json``, so a consumer's poll
        stays one conditional request. It is swapped in with the announced
        version unchanged; a producer announcing meanwhile makes the swap fail,
        and the pin is set again on top of its announcement (producers carry the
        pin over when they announce).
        """
        previous: int | None = None

        def change(announced: Announced) -> Pointer | None:
            nonlocal previous
            pointer = announced.pointer
            if pointer is None:
                raise DatasetNotFound(f"dataset {self.name!r} has no announced version at {self.url}; "
                                      "there is nothing to pin", dataset=self.name)
            if version is not None:
                pointer.check_pin(version)
                self.manifest(version)  # DatasetNotFound if gc removed it: consumers could not load it
            previous = pointer.pin
            return None if pointer.pin == version else replace(pointer, pin=version)

        pointer = self.update_announced(change, doing=f"setting the pin to {version}")
        assert pointer is not None  # change() raised when nothing was announced
        if previous != version:
            log.info("%s: store-wide pin %s -> %s (announced version %d)", self.name, previous, version,
                     pointer.version)
        return pointer, previous

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
