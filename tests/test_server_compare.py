"""The HTTP diff and key-history routes: pages put together equal the library's answer, cursors, errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from combe.consumer.server import Settings, create_app
from combe.consumer.timeline import Timeline
from combe.format.dataset import Dataset
from tests.support.served import Published, publish_all


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    return publish_all(tmp_path_factory.mktemp("compare"))


@pytest.fixture(scope="module")
def app(published: Published) -> Iterator[Flask]:
    app = create_app(str(published.store), ["movies", "counts"], settings=Settings(page_size=2, page_limit=50))
    yield app
    app.extensions["combe"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def pages(client: FlaskClient, url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page of a paged route: the bodies and their items put together."""
    bodies, items, cursor = [], [], None
    while True:
        response = client.get(url + (f"&cursor={cursor}" if cursor else ""))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        bodies.append(body)
        items += body["changes"]
        cursor = body["next_cursor"]
        if cursor is None:
            return bodies, items


def timeline(published: Published) -> Timeline:
    return Timeline(Dataset.open(str(published.store), "movies"))


@pytest.mark.parametrize("start, end", [(1, 3), (3, 1), (2, 3), (3, 3)])
def test_diff_pages_add_up_to_the_library_diff(client: FlaskClient, published: Published, start: int,
                                               end: int) -> None:
    bodies, changes = pages(client, f"/v1/datasets/movies/diff?from={start}&to={end}")
    expected = timeline(published).diff(start, end)
    assert changes == [asdict(change) for change in expected]
    assert all(len(body["changes"]) <= 2 for body in bodies)
    first = bodies[0]
    assert (first["from"], first["to"], first["version"]) == (start, end, 3)
    assert first["counts"] == expected.counts and first["method"] in ("deltas", "states")
    # The server starts from the View it serves (version 3), so it may read less than a Timeline alone.
    assert first["bytes_read"] <= expected.bytes_read


def test_diff_to_defaults_to_the_version_served_and_says_what_changed(client: FlaskClient,
                                                                      published: Published) -> None:
    _, changes = pages(client, "/v1/datasets/movies/diff?from=1")
    history = published.expected["movies"]
    assert {c["key"]: c["op"] for c in changes} == {
        "m1": "removed", "m100": "added", "m101": "added", "m2": "updated", "m3": "updated", "m5": "removed"}
    m2 = next(c for c in changes if c["key"] == "m2")
    assert (m2["before"], m2["after"]) == (history[1]["m2"], history[3]["m2"])


@pytest.mark.parametrize("query, status, message", [
    ("", 400, "?from=A"),
    ("?from=x", 400, "from='x'"),
    ("?from=0", 400, "from='0'"),
    ("?from=1&to=-2", 400, "to='-2'"),
    ("?from=1&to=9", 404, "no announced version 9"),
    ("?from=1&cursor=2.1", 400, "belongs to version 2"),
    ("?from=1&limit=51", 400, "limit='51'"),
])
def test_diff_refusals(client: FlaskClient, query: str, status: int, message: str) -> None:
    response = client.get(f"/v1/datasets/movies/diff{query}")
    assert response.status_code == status
    assert message in response.get_json()["error"]["message"]


def test_key_history_newest_first_in_pages(client: FlaskClient, published: Published) -> None:
    bodies, changes = pages(client, "/v1/datasets/movies/history/m3?limit=1")
    expected = timeline(published).history("m3")
    assert changes == [asdict(change) for change in reversed(expected.changes)]
    assert [(c["version"], c["op"]) for c in changes] == [(3, "updated"), (1, "added")]
    assert len(bodies) == 2 and bodies[0]["next_cursor"] == "3"
    assert bodies[0]["key"] == "m3" and bodies[0]["to"] == 3 and bodies[0]["removed_by_gc"] == []
    assert changes[0]["record"] == published.expected["movies"][3]["m3"]

    int_keys = client.get("/v1/datasets/counts/history/-2").get_json()
    assert int_keys["key"] == -2 and [(c["version"], c["op"], c["record"]) for c in int_keys["changes"]] == [
        (1, "added", {"key": -2, "n": -2, "square": 4})]
    assert client.get("/v1/datasets/movies/history/never").get_json()["changes"] == []
    refused = client.get("/v1/datasets/counts/history/two")
    assert refused.status_code == 400 and "int64" in refused.get_json()["error"]["message"]
