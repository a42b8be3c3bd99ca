"""The read service's unit tests: a combe.testing.TestDataset in memory, the real Consumer on top."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from read_service import MovieService

from combe.testing import TestDataset

MOVIES = {"tt0034583": {"title": "Casablanca", "year": 1942}, "tt0075148": {"title": "Rocky", "year": 1976}}


def call(app: MovieService, path: str) -> tuple[str, bytes]:
    """One GET through the WSGI app, as a server would make it."""
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"] = status

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.input": BytesIO()}
    body = b"".join(app(environ, start_response))
    return answer["status"], body


@pytest.fixture
def movies() -> Iterator[TestDataset]:
    with TestDataset(MOVIES, name="movies") as dataset:
        yield dataset


def test_looks_movies_up_and_follows_new_versions(movies: TestDataset) -> None:
    with movies.consumer() as consumer:
        app = MovieService(consumer, CollectorRegistry())
        status, body = call(app, "/movies/tt0034583")
        assert status == "200 OK"
        assert json.loads(body) == {"version": 1, "movie": {"key": "tt0034583", "title": "Casablanca", "year": 1942}}
        assert call(app, "/movies/tt9999999")[0] == "404 Not Found"

        movies.update({"tt0034583": None, "tt0080684": {"title": "The Empire Strikes Back", "year": 1980}})
        consumer.refresh()
        assert call(app, "/movies/tt0034583")[0] == "404 Not Found"
        assert json.loads(call(app, "/movies/tt0080684")[1])["version"] == 2


def test_metrics_hold_the_consumers_and_the_services_own(movies: TestDataset) -> None:
    with movies.consumer() as consumer:
        app = MovieService(consumer, CollectorRegistry())
        call(app, "/movies/tt0075148")
        movies.update({"tt0075148": {"title": "Rocky", "year": 1976, "sequels": 5}})
        consumer.refresh()
        status, body = call(app, "/metrics")
        assert status == "200 OK"
        found = {(s.name, tuple(sorted(s.labels.items()))): s.value
                 for family in text_string_to_metric_families(body.decode()) for s in family.samples}
        assert found[("combe_dataset_version", (("dataset", "movies"),))] == 2
        assert found[("combe_dataset_records", (("dataset", "movies"),))] == 2
        assert found[("combe_dataset_refreshes_total", (("dataset", "movies"), ("result", "changed")))] == 1
        assert found[("movie_lookups_total", (("outcome", "found"),))] == 1
