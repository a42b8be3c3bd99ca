"""Small datasets for the HTTP endpoint's tests, published with the real producer from JSONL files.

``movies`` (string keys) has three versions with additions, updates and
removals; ``counts`` (int64 keys) has one. ``Published.expected`` holds what
each version must serve, replayed independently from the changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from combe.format.dataset import Dataset
from combe.producer import PublishOptions, Publisher, RecordFormat, open_source

from .changelog import Change, append_jsonl

GENRES = ("drama", "comedy", "sci-fi")


def movie(i: int, **changes: Any) -> dict[str, Any]:
    value = {"title": f"Movie {i}", "year": 1990 + i % 10, "genre": GENRES[i % 3], "rating": 5.0 + i % 5 / 2,
             "tags": ["classic", str(i)]}
    value.update(changes)
    return value


# version -> the changes that make it from the previous one
MOVIES: dict[int, list[Change]] = {
    1: [(f"m{i}", movie(i)) for i in range(30)],
    2: [("m1", None), ("m2", movie(2, title="Movie 2 (restored)")), ("m100", movie(100, title="A new one"))],
    3: [("m3", movie(3, year=2001)), ("m101", movie(101)), ("m5", None)],
}
COUNTS: dict[int, list[Change]] = {1: [(n, {"n": n, "square": n * n}) for n in range(-3, 7)]}
# version -> the tags it is published with
MOVIE_TAGS: dict[int, dict[str, str]] = {3: {"commit": "4f2a9c1", "data.date": "2026-11-27"}}


@dataclass
class Published:
    store: Path
    sources: Path
    expected: dict[str, dict[int, dict[Any, dict[str, Any]]]] = field(default_factory=dict)

    def publish(self, dataset: str, changes: list[Change], key_type: str = "string",
                tags: dict[str, str] | None = None) -> int:
        """Publish one version of ``dataset`` from ``changes``; returns the version number."""
        source = self.sources / f"{dataset}.jsonl"
        append_jsonl(source, changes)
        publisher = Publisher(Dataset.open(str(self.store), dataset), open_source(str(source)),
                              PublishOptions(fmt=RecordFormat(key_type=key_type), tags=tags or {}))
        result = publisher.run_cycle()
        assert result.version is not None
        history = self.expected.setdefault(dataset, {})
        state = dict(history.get(result.version - 1, {}))
        for key, value in changes:
            if value is None:
                state.pop(key, None)
            else:
                state[key] = {"key": key, **value}
        history[result.version] = state
        return result.version

    def latest(self, dataset: str) -> dict[Any, dict[str, Any]]:
        history = self.expected[dataset]
        return history[max(history)]


def publish_all(root: Path) -> Published:
    """Both datasets, every version, in a local store under ``root``."""
    sources = root / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    published = Published(root / "store", sources)
    for version, changes in MOVIES.items():
        published.publish("movies", changes, tags=MOVIE_TAGS.get(version))
    published.publish("counts", COUNTS[1], key_type="int64")
    return published
