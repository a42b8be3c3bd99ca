"""``lease.json``: which producer of a dataset may publish, and until when.

Producers that run with a lease share this one document by compare-and-swap
(producer/lease.py has the rules): the holder renews it, the others take it
once it has expired, each taking raising ``epoch`` by one. The epoch is what
fences a holder that lost the lease: announcements record it
(``Pointer.lease_epoch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .errors import FormatError
from .layout import LEASE_FORMAT, READABLE_LEASES, check_dataset_name
from .manifest import Sign, Verify, _dump, _parse, _time_text, parse_time


@dataclass(frozen=True)
class Lease:
    """The lease as written: ``holder`` may publish ``dataset`` until ``expires_at`` unless it renews."""

    dataset: str
    holder: str
    epoch: int
    acquired_at: str
    renewed_at: str
    expires_at: str
    duration_ms: int

    def expired(self, now: datetime) -> bool:
        return parse_time(self.expires_at) <= now

    def to_json(self, sign: Sign | None = None) -> bytes:
        return _dump({"format_version": LEASE_FORMAT, "dataset": self.dataset, "holder": self.holder,
                      "epoch": self.epoch, "acquired_at": self.acquired_at, "renewed_at": self.renewed_at,
                      "expires_at": self.expires_at, "duration_ms": self.duration_ms}, sign)

    @classmethod
    def from_json(cls, data: bytes, path: str, verify: Verify | None = None) -> Lease:
        fields = _parse(data, path, READABLE_LEASES, verify=verify)
        lease = cls(fields.checked("dataset", str, check_dataset_name), fields.get("holder", str),
                    fields.get("epoch", int), fields.checked("acquired_at", str, _time_text),
                    fields.checked("renewed_at", str, _time_text), fields.checked("expires_at", str, _time_text),
                    fields.get("duration_ms", int))
        if lease.epoch < 1 or lease.duration_ms < 1 or not lease.holder:
            raise FormatError(f"{path}: epoch and duration_ms must be 1 or more, holder not empty", path=path)
        if parse_time(lease.expires_at) < parse_time(lease.renewed_at):
            raise FormatError(f"{path}: expires_at is before renewed_at", path=path)
        return lease
