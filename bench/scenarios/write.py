"""Snapshot write: combe's encoding of a full snapshot against a bare zstd + Arrow IPC write.

combe adds the key index (hashing every key, a stable sort) and writes the
blob through the store; the bare write is what anyone would do to put a table
on disk compressed: an IPC file, one zstd frame at the same level, one file
write. Throughput is the Arrow data size (table.nbytes) over the seconds.
"""

from __future__ import annotations

import pyarrow as pa
import zstandard

from combe.format.codec import ZSTD_LEVEL, encode_table
from combe.format.dataset import Dataset
from combe.format.index import with_index
from combe.format.layout import new_uid, snapshot_blob

from ..stats import Figure, ratio, timed
from ..workspace import Workspace


def bare_write(table: pa.Table, path: str) -> int:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(sink.getvalue())
    with open(path, "wb") as handle:
        handle.write(data)
    return len(data)


def combe_write(table: pa.Table, dataset: Dataset, key_field: str, key_type: str) -> int:
    data = encode_table(with_index(table, key_field, key_type))
    dataset.write_blob(snapshot_blob(1, new_uid()), data)
    return len(data)


def run(ws: Workspace) -> list[Figure]:
    with ws.consumer() as consumer:
        view = consumer.view()
        table, schema = view.table, view.schema
    megabytes = table.nbytes / 1e6
    scratch = Dataset.open(str(ws.root / "write-scratch"), "snapshots")
    bare_path = str(ws.root / "bare-snapshot.arrow.zst")
    combe = Figure("snapshot_write_mb_per_s", "MB/s", [], "combe: key index + IPC + zstd + store write")
    bare = Figure("bare_write_mb_per_s", "MB/s", [], "IPC + zstd (same level) + file write")
    for _ in range(ws.mode.runs):
        seconds, _ = timed(lambda: combe_write(table, scratch, schema.key_field, schema.key_type))
        combe.values.append(megabytes / seconds)
        seconds, _ = timed(lambda: bare_write(table, bare_path))
        bare.values.append(megabytes / seconds)
    return [combe, bare, ratio("snapshot_write_fraction_of_bare", combe, bare)]
