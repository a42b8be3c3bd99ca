"""A dataset in a store: typed reads and writes of its announcement, pin, manifests and blobs.

This is the one place where format meets store I/O; producer and consumer
both go through it, so the rules (create-only manifests, compare-and-swap
announcements, sha256 checked before a blob is used) live here once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from .codec import read_ipc, verified_ipc, verify
from .errors import ConflictError, DatasetNotFound, FormatError, ObjectNotFound
from .layout import (ANNOUNCED, LEASE, SHARD_HEAD, SHARDING, VERSIONS_DIR, check_dataset_name, manifest_path,
                     manifest_version, shard_dir)
from .lease import Lease
from .manifest import BlobRef, Manifest, Pointer, Sign, Verify
from .sharded import ShardedManifest, Sharding
from .signing import Signer, TrustedKeys
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
    """One dataset under ``<store>/<name>/``, or one shard of a sharded dataset (``shard(i)``).

    A shard is a chain of versions like an unsharded dataset, under
    ``<store>/<name>/shards/<i>/``; its announcement is its head
    (``head.json``), which only its producers read and move.

    With a ``signer`` every document written (manifests, announcements and
    heads, ``shards.json``) is signed; with ``trusted`` keys every one read
    must carry a valid signature by one of them (or by the signer), else
    SignatureError (format/signing.py). A shard signs and verifies as its
    dataset does.
    """

    def __init__(self, store: Store, name: str, *, shard: tuple[int, int] | None = None,
                 signer: Signer | None = None, trusted: TrustedKeys | None = None) -> None:
        self.name = check_dataset_name(name)
        self.root = store
        self.shard_of = shard  # (shard, shard count) of a shard; its manifests record it
        self.store = store.child(name) if shard is None else store.child(name).child(shard_dir(shard[0]))
        self._announcement = ANNOUNCED if shard is None else SHARD_HEAD
        self.signer = signer
        self.trusted = trusted.with_key(signer.public) if trusted and signer else trusted

    @classmethod
    def open(cls, url: str, name: str, storage_options: dict[str, Any] | None = None, *,
             signing_key: str | Path | None = None, trusted_keys: Iterable[str | Path] = ()) -> Dataset:
        """The dataset ``name`` in the store at ``url``; key files as in docs/FORMAT.md, "Signatures"."""
        paths = list(trusted_keys)
        return cls(open_store(url, storage_options), name,
                   signer=Signer.from_file(signing_key) if signing_key else None,
                   trusted=TrustedKeys.from_files(paths) if paths else None)

    def _sign(self, kind: str) -> Sign | None:
        signer = self.signer
        return None if signer is None else lambda document: signer.sign(kind, document)

    def _verify(self, kind: str, path: str) -> Verify | None:
        trusted = self.trusted
        return None if not trusted else lambda document: trusted.verify(kind, document, path)

    def shard(self, index: int, count: int) -> Dataset:
        """Shard ``index`` of this dataset, sharded ``count`` ways."""
        return Dataset(self.root, self.name, shard=(index, count), signer=self.signer, trusted=self.trusted)

    @property
    def url(self) -> str:
        return self.store.url

    @property
    def label(self) -> str:
        """The dataset's name in messages: ``movies``, or ``movies shard 3``."""
        return self.name if self.shard_of is None else f"{self.name} shard {self.shard_of[0]}"

    def _pointer(self, data: bytes, path: str) -> Pointer:
        location = f"{self.url}/{path}"
        pointer = Pointer.from_json(data, location, self._verify("announced", location))
        if pointer.dataset != self.name:
            raise FormatError(f"{self.url}/{path} names dataset {pointer.dataset!r}, not {self.name!r}",
                              path=path)
        if self.shard_of is not None and pointer.shard_count is not None:
            raise FormatError(f"{self.url}/{path} is a sharded announcement, not a shard head", path=path)
        return pointer

    def announced(self) -> Announced:
        """The current announcement (a shard's head); ``pointer`` is None before the first publish."""
        try:
            data, tag = self.store.read_tagged(self._announcement)
        except ObjectNotFound:
            return Announced(None, None)
        return Announced(self._pointer(data, self._announcement), tag)

    def poll_announced(self, tag: str | None) -> Announced | None:
        """None if the announcement still has ``tag``: one small conditional request."""
        try:
            changed = self.store.read_if_changed(self._announcement, tag)
        except ObjectNotFound:
            return None if tag is None else Announced(None, None)
        if changed is None:
            return None
        return Announced(self._pointer(changed[0], self._announcement), changed[1])

    def require_announced(self) -> Pointer:
        pointer = self.announced().pointer
        if pointer is None:
            raise DatasetNotFound(f"dataset {self.label!r} has no announced version at {self.url}; "
                                  "publish it first (combe publish)", dataset=self.name)
        return pointer

    def announce(self, pointer: Pointer, expected_tag: str | None) -> str | None:
        """Compare-and-swap the announcement; the new tag, or None if another producer moved it."""
        return self.store.compare_and_swap(self._announcement, pointer.to_json(self._sign("announced")), expected_tag)

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
        raise ConflictError(f"{self.label}: {self._announcement} kept changing while {doing} ({attempts} attempts); "
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
                # DatasetNotFound if gc removed it: consumers could not load it
                (self.sharded_manifest if pointer.shard_count else self.manifest)(version)
            previous = pointer.pin
            return None if pointer.pin == version else replace(pointer, pin=version)

        pointer = self.update_announced(change, doing=f"setting the pin to {version}")
        assert pointer is not None  # change() raised when nothing was announced
        if previous != version:
            log.info("%s: store-wide pin %s -> %s (announced version %d)", self.name, previous, version,
                     pointer.version)
        return pointer, previous

    def lease(self) -> tuple[Lease | None, str | None]:
        """``lease.json`` and the tag a compare-and-swap must quote; (None, None) when there is none."""
        try:
            data, tag = self.store.read_tagged(LEASE)
        except ObjectNotFound:
            return None, None
        location = f"{self.url}/{LEASE}"
        lease = Lease.from_json(data, location, self._verify("lease", location))
        if lease.dataset != self.name:
            raise FormatError(f"{location} names dataset {lease.dataset!r}, not {self.name!r}", path=LEASE)
        return lease, tag

    def swap_lease(self, lease: Lease, expected_tag: str | None) -> str | None:
        """Compare-and-swap ``lease.json``; the new tag, or None if another producer changed it first."""
        return self.store.compare_and_swap(LEASE, lease.to_json(self._sign("lease")), expected_tag)

    def _version_document(self, version: int) -> tuple[bytes, str]:
        path = manifest_path(version)
        try:
            return self.store.read(path), path
        except ObjectNotFound as exc:
            raise DatasetNotFound(f"dataset {self.label!r} has no version {version} at {self.url} "
                                  "(never published, or removed by gc)", dataset=self.name) from exc

    def manifest(self, version: int) -> Manifest:
        """Version ``version`` of this chain (an unsharded dataset or a shard), checked to belong to it."""
        data, path = self._version_document(version)
        location = f"{self.url}/{path}"
        manifest = Manifest.from_json(data, location, self._verify("manifest", location))
        if manifest.version != version or manifest.dataset != self.name or manifest.shard != self.shard_of:
            where = "" if manifest.shard is None else f" shard {manifest.shard[0]} of {manifest.shard[1]}"
            raise FormatError(f"{self.url}/{path} holds version {manifest.version} of {manifest.dataset!r}{where}",
                              path=path)
        return manifest

    def create_manifest(self, manifest: Manifest) -> bool:
        """Write the manifest create-only; False if that version already exists."""
        return self.store.put_if_absent(manifest_path(manifest.version), manifest.to_json(self._sign("manifest")))

    # -- sharded datasets ---------------------------------------------------------------

    def sharding(self) -> Sharding | None:
        """How this dataset is sharded (``shards.json``), or None for a dataset created unsharded or not yet."""
        try:
            data = self.store.read(SHARDING)
        except ObjectNotFound:
            return None
        location = f"{self.url}/{SHARDING}"
        sharding = Sharding.from_json(data, location, self._verify("sharding", location))
        if sharding.dataset != self.name:
            raise FormatError(f"{self.url}/{SHARDING} names dataset {sharding.dataset!r}, not {self.name!r}",
                              path=SHARDING)
        return sharding

    def create_sharding(self, sharding: Sharding) -> Sharding:
        """Write ``shards.json`` create-only; the sharding in the store after (another writer's, if it was first)."""
        if self.store.put_if_absent(SHARDING, sharding.to_json(self._sign("sharding"))):
            return sharding
        found = self.sharding()
        assert found is not None  # it was there a moment ago, and nothing deletes it
        return found

    def sharded_manifest(self, version: int) -> ShardedManifest:
        """Version ``version`` of a sharded dataset: the shard versions it is made of."""
        data, path = self._version_document(version)
        location = f"{self.url}/{path}"
        manifest = ShardedManifest.from_json(data, location, self._verify("manifest", location))
        if manifest.version != version or manifest.dataset != self.name:
            raise FormatError(f"{self.url}/{path} holds version {manifest.version} of {manifest.dataset!r}",
                              path=path)
        return manifest

    def create_sharded_manifest(self, manifest: ShardedManifest) -> bool:
        """Write a sharded manifest create-only; False if that version already exists."""
        return self.store.put_if_absent(manifest_path(manifest.version), manifest.to_json(self._sign("manifest")))

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

    def blob_table(self, ref: BlobRef, owner: Manifest) -> pa.Table:
        """The table in a blob that ``owner`` references: sha256 verified, then checked against ``owner``."""
        path = f"{self.url}/{ref.path}"
        table = read_ipc(self.blob_ipc(ref), path=path)
        owner.check_blob(table.schema, table.num_rows, ref, path=path)
        return table

    def write_blob(self, path: str, data: bytes | bytearray) -> None:
        self.store.write(path, data)
