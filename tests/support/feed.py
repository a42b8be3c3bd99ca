"""A changelog published version by version into a store (local unless given), with every version's replayed state.

The replayed state (tests/support/changelog.py) is the independent truth a
consumer's View is compared with: a plain dict built from the changes alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from combe.consumer import Consumer, View
from combe.format.manifest import BlobRef
from combe.format.dataset import Dataset
from combe.producer import PublishOptions, Publisher, RecordFormat, open_source
from tests.support.changelog import Change, append_jsonl, canon, replay, table_state


class Feed:
    def __init__(self, tmp_path: Path, name: str = "movies", key_type: str = "string", *, store: str | None = None,
                 storage_options: dict[str, Any] | None = None, **options: Any) -> None:
        self.store = store or str(tmp_path / "store")
        self.storage_options = storage_options
        self.name = name
        self.path = tmp_path / f"{name}.jsonl"
        self.path.touch()
        self.dataset = Dataset.open(self.store, name, storage_options)
        options.setdefault("fmt", RecordFormat(key_type=key_type))
        self.publisher = Publisher(self.dataset, open_source(str(self.path)), PublishOptions(**options))
        self.states: dict[int, dict[Any, str]] = {}

    def publish(self, changes: list[Change]) -> int:
        append_jsonl(self.path, changes)
        result = self.publisher.run_cycle()
        assert result.outcome == "published", result
        assert result.version is not None
        self.states[result.version] = replay(changes, self.states.get(result.version - 1))
        return result.version

    def blob_file(self, version: int, kind: str) -> Path:
        """The local file of one version's snapshot, delta or reverse blob (local stores only)."""
        ref = getattr(self.dataset.manifest(version), kind)
        assert ref is not None, f"version {version} has no {kind} blob"
        return Path(self.store) / self.name / ref.path

    def consumer(self, **options: Any) -> Consumer:
        options.setdefault("storage_options", self.storage_options)
        return Consumer(self.store, self.name, **options)


def view_state(view: View) -> dict[Any, str]:
    """The View's whole table in the replay's canonical form."""
    return table_state(view.table, view.schema)


def lookup_state(view: View, keys: list[Any]) -> dict[Any, str]:
    """The View's records for ``keys`` found one by one and in a batch, which must agree."""
    one_by_one = [view.get(key) for key in keys]
    assert view.get_many(keys) == one_by_one
    return {key: canon(record) for key, record in zip(keys, one_by_one) if record is not None}  # type: ignore[misc]


def record_reads(consumer: Consumer) -> list[str]:
    """The blob paths this consumer fetches from now on (the real reads, recorded on the way)."""
    reads: list[str] = []
    read = consumer.dataset.blob_ipc

    def recording(ref: BlobRef) -> bytes | bytearray:
        reads.append(ref.path)
        return read(ref)

    consumer.dataset.blob_ipc = recording  # type: ignore[method-assign]
    return reads


def blob(feed: Feed, version: int, kind: str) -> str:
    """The path of ``version``'s snapshot, delta or reverse blob."""
    ref = getattr(feed.dataset.manifest(version), kind)
    assert ref is not None
    return str(ref.path)
