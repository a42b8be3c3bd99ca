"""A local directory of verified blobs, kept decompressed and loaded by memory-mapping.

A blob is downloaded and checked against its manifest's sha256 once; its
Arrow IPC file is then written under the sha256 (content-addressed, so one
name can only ever hold one content) by an atomic rename. Later loads, in
this process or another on the host, map the file: no download, no
decompression, and the page cache is shared between processes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pyarrow as pa

from combe.format.codec import decompress, read_ipc
from combe.format.dataset import Dataset
from combe.format.errors import CombeError, FormatError
from combe.format.manifest import BlobRef

log = logging.getLogger(__name__)


class BlobCache:
    def __init__(self, dataset: Dataset, directory: Path) -> None:
        self.dataset = dataset
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, ref: BlobRef) -> Path:
        return self.directory / f"{ref.sha256}.arrow"

    def table(self, ref: BlobRef) -> pa.Table:
        path = self.path(ref)
        if path.exists():
            try:
                return read_ipc(pa.memory_map(str(path)), path=str(path))
            except (CombeError, OSError) as exc:
                log.warning("cached blob %s is unreadable (%s); fetching it again", path, exc)
        data = self.dataset.read_blob(ref)
        self._store(path, decompress(data, path=f"{self.dataset.url}/{ref.path}"))
        return read_ipc(pa.memory_map(str(path)), path=str(path))

    def _store(self, path: Path, ipc: bytes) -> None:
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".incoming-", suffix=".arrow")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(ipc)
            os.replace(temp, path)  # atomic: other processes see the whole file or none
        except OSError as exc:
            os.unlink(temp)
            raise FormatError(f"cannot write cache file {path}: {exc}", path=str(path)) from exc
