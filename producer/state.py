"""The announced state, rebuilt from the store: the nearest snapshot plus forward deltas."""

from __future__ import annotations

import logging

import pyarrow as pa

from combe.format.codec import read_ipc
from combe.format.dataset import Dataset
from combe.format.delta import apply_delta
from combe.format.errors import FormatError
from combe.format.index import split_index
from combe.format.manifest import BlobRef, Manifest
from combe.format.schema import conform

log = logging.getLogger(__name__)


def read_table(dataset: Dataset, ref: BlobRef) -> pa.Table:
    table = read_ipc(dataset.blob_ipc(ref), path=f"{dataset.url}/{ref.path}")
    return split_index(table)[0]


def load_state(dataset: Dataset, manifest: Manifest) -> pa.Table:
    """The full table at ``manifest``'s version, sorted by key, in its schema."""
    chain = [manifest]
    while chain[-1].version != manifest.snapshot_version:
        parent = chain[-1].parent
        if parent is None:
            raise FormatError(f"{dataset.url}: version {chain[-1].version} has no parent but is not a snapshot")
        chain.append(dataset.manifest(parent))
    base = chain.pop()
    assert base.snapshot is not None
    log.info("loading %s version %d: snapshot %d + %d deltas", dataset.name, manifest.version,
             base.version, len(chain))
    state = conform(read_table(dataset, base.snapshot), base.schema)
    for step in reversed(chain):
        assert step.delta is not None
        state = apply_delta(state, read_table(dataset, step.delta), step.schema,
                            what=f"delta {step.delta.path}")
    return state
