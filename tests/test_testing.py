"""combe.testing, used the way a service's own tests would use it."""

from __future__ import annotations

from typing import Any

import fsspec
import pyarrow as pa
import pytest

from combe import Consumer
from combe.consumer import Update
from combe.format.errors import BadRecordError, ConfigError, SourceError
from combe.testing import TestDataset


class Catalogue:
    """The code under test: a tiny service over a movies dataset."""

    def __init__(self, movies: Consumer) -> None:
        self.movies = movies

    def title(self, key: str) -> str:
        movie = self.movies.get(key)
        return "unknown" if movie is None else str(movie["title"])

    def by_genre(self, genre: str) -> list[str]:
        return [movie["key"] for movie in self.movies.index("genre").get(genre)]


def test_a_service_reads_versions_published_from_dicts() -> None:
    with TestDataset({"m1": {"title": "Alien", "genre": "sci-fi"}, "m2": {"title": "Heat", "genre": "crime"}},
                     name="movies") as movies, movies.consumer() as consumer:
        service = Catalogue(consumer)
        assert service.title("m1") == "Alien" and service.title("m9") == "unknown"
        assert service.by_genre("sci-fi") == ["m1"]
        seen: list[Update] = []
        consumer.on_update(seen.append)

        assert movies.update({"m2": None, "m3": {"title": "Solaris", "genre": "sci-fi"}}) == 2
        consumer.refresh()
        assert service.by_genre("sci-fi") == ["m1", "m3"] and service.title("m2") == "unknown"
        assert (seen[-1].added, seen[-1].removed) == ({"m3"}, {"m2"})

        assert movies.publish({"m3": {"title": "Solaris", "genre": "drama"}}, tags={"case": "whole"}) == 3
        consumer.refresh()
        assert len(consumer) == 1 and service.by_genre("drama") == ["m3"] and consumer.view().tags == {"case": "whole"}
        assert movies.publish({"m3": {"title": "Solaris", "genre": "drama"}}) == 3  # nothing changed: no version
        assert [(c.key, c.op) for c in consumer.diff(1)] == [("m1", "removed"), ("m2", "removed"), ("m3", "added")]


def test_tables_with_int_keys() -> None:
    table = pa.table({"id": [3, 1, 2], "score": [0.5, None, 2.0], "tags": [["a"], [], None]})
    with TestDataset(table, key="id", name="scores") as scores, scores.consumer() as consumer:
        assert consumer.get(1) == {"id": 1, "score": None, "tags": []}
        assert consumer.get("3") == {"id": 3, "score": 0.5, "tags": ["a"]}  # an int64 dataset: keys as text too
        assert consumer.view().schema.key_type == "int64"
        scores.publish(pa.table({"id": [4], "score": [1.0], "tags": [["b"]]}))
        consumer.refresh()
        assert consumer.get_many([1, 4]) == [None, {"id": 4, "score": 1.0, "tags": ["b"]}]  # a whole state


@pytest.mark.parametrize("data, message", [
    ({"a": "not a dict"}, "the record of key 'a' is a str; give a dict"),
    (pa.table({"k": ["a"]}), "no key column 'key'"),

    ([("a", {"n": 1})], "cannot publish a list"),
    ({}, "needs at least one record"),
])
def test_bad_data_is_refused_clearly(data: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TestDataset(data).close()


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(SourceError, match="key 'a' appears 2 times"):
        TestDataset(pa.table({"key": ["a", "a"], "n": [1, 2]})).close()


def test_a_record_combe_cannot_store_names_its_change_and_publishes_nothing() -> None:
    with TestDataset({"a": {"n": 1}}) as data:
        with pytest.raises(BadRecordError, match=r"change 1 given to the IncrementalPublisher \(key 'b'\)"):
            data.update({"b": {"n": "one"}})  # n holds int64
        assert data.update({"b": {"n": 2}}) == 2  # the refused change is not read again
        with data.consumer() as consumer:
            assert consumer.get("b") == {"key": "b", "n": 2}


def test_each_dataset_has_its_own_store_and_close_removes_it() -> None:
    with TestDataset({"a": {"n": 1}}) as first, TestDataset({"a": {"n": 2}}) as second:
        assert first.store != second.store
        with first.consumer() as one, second.consumer() as two:
            assert (one.get("a"), two.get("a")) == ({"key": "a", "n": 1}, {"key": "a", "n": 2})
    assert not fsspec.filesystem("memory").exists("/" + first.store.removeprefix("memory://"))
