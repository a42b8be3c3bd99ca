"""Where each object of a dataset lives, relative to ``<store>/<dataset>/``.

Only ``announced.json`` and ``lease.json`` ever change; manifests and blobs are
written once under names that are never reused, so a retried or racing cycle
cannot overwrite anything a reader may be using.
"""

from __future__ import annotations

import re
import uuid

from .errors import ConfigError, FormatError

# What this combe writes: manifests changed in version 2 (the h128 state checksum, nested types);
# the announcement of an unsharded dataset is still written as version 1. Sharded datasets (format 3)
# announce with version 2 and record their versions as sharded manifests, version 3, so that an older
# reader refuses them by their format_version. Readers take every version listed as readable.
MANIFEST_FORMAT = 2
POINTER_FORMAT = 1
SHARDED_POINTER_FORMAT = 2
SHARDED_MANIFEST_FORMAT = 3
SHARDING_FORMAT = 1
READABLE_MANIFESTS = (1, 2)
READABLE_POINTERS = (1, 2)
READABLE_SHARDED_MANIFESTS = (3,)
READABLE_SHARDINGS = (1,)
LEASE_FORMAT = 1
READABLE_LEASES = (1,)
ANNOUNCED = "announced.json"
# Which producer may publish, among those run with a lease (format/lease.py); absent when none ever was.
LEASE = "lease.json"
VERSIONS_DIR = "versions"
BLOBS_DIR = "blobs"
# A sharded dataset: its shard count, fixed at creation (create-only), and one folder per shard, which
# holds an ordinary chain of versions and blobs plus the shard head its producer moves (readers never do).
SHARDING = "shards.json"
SHARDS_DIR = "shards"
SHARD_HEAD = "head.json"

_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MANIFEST_NAME = re.compile(r"^versions/(\d{12})\.json$")
_BLOB_NAME = re.compile(
    r"^blobs/(?:snapshot-(?P<snap>\d+)|delta-(?P<dfrom>\d+)-(?P<dto>\d+)"
    r"|reverse-(?P<rfrom>\d+)-(?P<rto>\d+))-(?P<uid>[0-9a-f]{32})\.arrow\.zst$"
)


def check_dataset_name(name: str) -> str:
    """Refuse names that could escape the store root or confuse a listing."""
    if not isinstance(name, str) or not _DATASET_NAME.match(name) or ".." in name:
        raise ConfigError(
            f"invalid dataset name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def shard_dir(shard: int) -> str:
    """A shard's folder relative to its dataset: ``shards/<shard>`` (decimal, no padding)."""
    return f"{SHARDS_DIR}/{shard}"


def manifest_path(version: int) -> str:
    return f"{VERSIONS_DIR}/{version:012d}.json"


def manifest_version(path: str) -> int | None:
    """The version a manifest path names, or None for anything else."""
    match = _MANIFEST_NAME.match(path)
    return int(match.group(1)) if match else None


def new_uid() -> str:
    return uuid.uuid4().hex


def snapshot_blob(version: int, uid: str) -> str:
    return f"{BLOBS_DIR}/snapshot-{version}-{uid}.arrow.zst"


def delta_blob(version: int, uid: str) -> str:
    return f"{BLOBS_DIR}/delta-{version - 1}-{version}-{uid}.arrow.zst"


def reverse_blob(version: int, uid: str) -> str:
    return f"{BLOBS_DIR}/reverse-{version}-{version - 1}-{uid}.arrow.zst"


def check_blob_path(path: str) -> str:
    """Accept only blob paths this module could have made (no ``..``, no absolute paths)."""
    if not isinstance(path, str) or not _BLOB_NAME.match(path):
        raise FormatError(f"blob path {path!r} is not a combe blob name")
    return path


def is_blob_path(path: str) -> bool:
    return bool(_BLOB_NAME.match(path))
