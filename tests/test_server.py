"""The HTTP endpoint: every route against datasets published by the real producer, in process and under gunicorn."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from combe.consumer.server import Settings, create_app
from combe.consumer.server.checks import check_index
from combe.format.errors import ConfigError
from combe.format.schema import Schema
from combe.format.store_local import LocalStore
from tests.support.served import Published, fetch, movie, publish_all, start_serve, stop

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    return publish_all(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def app(published: Published) -> Iterator[Flask]:
    app = create_app(str(published.store), ["movies", "counts"],
                     settings=Settings(batch_limit=5, max_body_bytes=2000, page_size=4, index=("genre", "year")))
    yield app
    app.extensions["combe"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def error_of(response: Any, status: int, kind: str) -> str:
    """The error message, after checking the status and the JSON error body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["status"] == status and error["type"] == kind
    assert error["message"]
    return str(error["message"])


# -- datasets ---------------------------------------------------------------------------


def test_lists_datasets(client: FlaskClient, published: Published) -> None:
    response = client.get("/v1/datasets")
    assert response.get_json() == {"datasets": [
        {"name": "movies", "ready": True, "version": 3, "records": len(published.latest("movies"))},
        {"name": "counts", "ready": True, "version": 1, "records": 10}]}
    assert response.headers["X-Combe-Version"] == "movies=3,counts=1"


def test_describes_a_dataset(client: FlaskClient, published: Published) -> None:
    body = client.get("/v1/datasets/movies").get_json()
    assert body["version"] == 3 and body["announced"] == 3 and body["records"] == len(published.latest("movies"))
    assert body["key"] == {"field": "key", "type": "string"}
    assert [c["name"] for c in body["schema"]] == ["key", "title", "year", "genre", "rating", "tags"]
    assert body["queryable"] == ["genre", "key", "year"]
    staleness = body["staleness"]
    assert 0 <= staleness["seconds_since_check"] < 60 and staleness["versions_behind"] == 0
    assert staleness["version_age_seconds"] >= 0 and staleness["last_error"] is None


def test_unknown_dataset_is_404(client: FlaskClient) -> None:
    assert "GET /v1/datasets" in error_of(client.get("/v1/datasets/nope"), 404, "DatasetNotFound")
    error_of(client.get("/v1/datasets/nope/records/x"), 404, "DatasetNotFound")


# -- records ----------------------------------------------------------------------------


def test_every_record_matches_the_replayed_changes(client: FlaskClient, published: Published) -> None:
    for key, record in published.latest("movies").items():
        response = client.get(f"/v1/datasets/movies/records/{key}")
        assert response.status_code == 200
        assert response.get_json() == {"dataset": "movies", "version": 3, "key": key, "record": record}
        assert response.headers["X-Combe-Version"] == "3"
    for n, record in published.latest("counts").items():
        assert client.get(f"/v1/datasets/counts/records/{n}").get_json()["record"] == record


def test_absent_key_is_404_with_a_json_body(client: FlaskClient) -> None:
    message = error_of(client.get("/v1/datasets/movies/records/m1"), 404, "RecordNotFound")
    assert "m1" in message and "version 3" in message


@pytest.mark.parametrize("key", ["abc", "1.5", "99999999999999999999", "-", "0x10", " 7"])
def test_key_that_is_not_an_int64_is_400(client: FlaskClient, key: str) -> None:
    assert "int64" in error_of(client.get(f"/v1/datasets/counts/records/{key}"), 400, "KeyTypeError")


def test_etag_and_conditional_get(client: FlaskClient) -> None:
    first = client.get("/v1/datasets/movies/records/m2")
    etag = first.headers["ETag"]
    assert etag and client.get("/v1/datasets/movies/records/m4").headers["ETag"] != etag
    again = client.get("/v1/datasets/movies/records/m2", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.get_data() == b""
    assert again.headers["X-Combe-Version"] == "3" and again.headers["ETag"] == etag
    assert client.get("/v1/datasets/movies/records/m2", headers={"If-None-Match": '"other"'}).status_code == 200
    for path in ("/v1/datasets", "/v1/datasets/movies/versions", "/healthz", "/v1/datasets/nope"):
        response = client.get(path)
        assert response.headers["ETag"] and response.headers["X-Combe-Version"]
    head = client.head("/v1/datasets/movies/records/m2")
    assert head.status_code == 200 and head.headers["ETag"] == etag


def test_batch_get_answers_in_order_with_nulls(client: FlaskClient, published: Published) -> None:
    expected = published.latest("movies")
    response = client.post("/v1/datasets/movies/records:batchGet", json={"keys": ["m2", "m1", "m100", "m2"]})
    assert response.status_code == 200
    assert response.get_json() == {"dataset": "movies", "version": 3,
                                   "records": [expected["m2"], None, expected["m100"], expected["m2"]]}
    counts = client.post("/v1/datasets/counts/records:batchGet", data=json.dumps({"keys": [3, "-2", 42]}))
    assert [r and r["n"] for r in counts.get_json()["records"]] == [3, -2, None]


@pytest.mark.parametrize("body, status, kind", [
    (b"{not json", 400, "RequestError"),
    (b"[1, 2]", 400, "RequestError"),
    (b'{"keys": "m1"}', 400, "RequestError"),
    (b'{"keys": [1]}', 400, "KeyTypeError"),  # movies has string keys
    (json.dumps({"keys": [f"m{i}" for i in range(6)]}).encode(), 413, "RequestTooLarge"),  # batch_limit=5
    (json.dumps({"keys": ["x" * 3000]}).encode(), 413, "RequestTooLarge"),  # max_body_bytes=2000
])
def test_bad_batch_bodies(client: FlaskClient, body: bytes, status: int, kind: str) -> None:
    error_of(client.post("/v1/datasets/movies/records:batchGet", data=body,
                         content_type="application/json"), status, kind)


# -- queries ----------------------------------------------------------------------------


def test_query_on_the_key_and_an_indexed_field(client: FlaskClient, published: Published) -> None:
    expected = published.latest("movies")
    assert client.get("/v1/datasets/movies/query?key=m4").get_json()["records"] == [expected["m4"]]
    assert client.get("/v1/datasets/movies/query?key=m1").get_json()["records"] == []
    comedies = sorted((r for r in expected.values() if r["genre"] == "comedy"), key=lambda r: r["key"])
    pages, cursor = [], None
    while True:
        url = "/v1/datasets/movies/query?genre=comedy&limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url).get_json()
        assert body["field"] == "genre" and body["match"] == {"eq": "comedy"} and len(body["records"]) <= 3
        pages += body["records"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == comedies


def test_range_query_in_field_order(client: FlaskClient, published: Published) -> None:
    body = client.get("/v1/datasets/movies/query?year.gte=1995&year.lt=1998&limit=100").get_json()
    years = [r["year"] for r in body["records"]]
    assert years == sorted(years) and set(years) == {1995, 1996, 1997}
    assert len(years) == sum(1995 <= r["year"] < 1998 for r in published.latest("movies").values())


@pytest.mark.parametrize("query, fragment", [
    ("title=Movie%202", "not an indexed field"),
    ("rating=5.0", "not an indexed field"),
    ("", "match one field"),
    ("genre=drama&year=1991", "match one field"),
    ("genre=drama&genre=comedy", "match one field"),
    ("year=abc", "64-bit integers"),
    ("genre=drama&limit=0", "limit"),
    ("genre=drama&limit=5000", "limit"),
    ("genre=drama&cursor=zzz", "cursor"),
    ("genre=drama&cursor=2.4", "start again"),  # a cursor from version 2: version 3 is served
])
def test_bad_queries_are_400(client: FlaskClient, query: str, fragment: str) -> None:
    assert fragment in error_of(client.get(f"/v1/datasets/movies/query?{query}"), 400,
                                "KeyTypeError" if fragment == "int64" else "RequestError")


# -- versions ---------------------------------------------------------------------------


def test_version_history_newest_first_and_paged(client: FlaskClient) -> None:
    body = client.get("/v1/datasets/movies/versions?limit=2").get_json()
    assert [v["version"] for v in body["versions"]] == [3, 2] and body["next_cursor"]
    assert body["versions"][1]["parent"] == 1 and body["versions"][1]["changes"]["removed"] == 1
    rest = client.get(f"/v1/datasets/movies/versions?limit=2&cursor={body['next_cursor']}").get_json()
    assert [v["version"] for v in rest["versions"]] == [1] and rest["next_cursor"] is None
    assert rest["versions"][0]["snapshot"] is True and rest["versions"][0]["records"] == 30


def all_changes(client: FlaskClient, version: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    changes, cursor, body = [], None, {}
    for _ in range(100):
        body = client.get(f"/v1/datasets/movies/versions/{version}/changes"
                          + (f"?cursor={cursor}" if cursor else "")).get_json()
        assert len(body["changes"]) <= 4  # page_size
        changes += body["changes"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    return body, changes


@pytest.mark.parametrize("version", [2, 3])
def test_changes_of_a_version_match_the_replay(client: FlaskClient, published: Published, version: int) -> None:
    before, after = published.expected["movies"][version - 1], published.expected["movies"][version]
    body, changes = all_changes(client, version)
    assert body["parent"] == version - 1
    expected = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            op = "added" if key not in before else "removed" if key not in after else "updated"
            expected.append({"op": op, "key": key, "record": after.get(key), "before": before.get(key)})
    assert changes == expected
    assert body["counts"] == {op: sum(c["op"] == op for c in expected) for op in ("added", "updated", "removed")}


def test_first_version_changes_are_its_whole_snapshot(client: FlaskClient, published: Published) -> None:
    body, changes = all_changes(client, 1)
    assert body["counts"] == {"added": 30, "updated": 0, "removed": 0}
    assert changes == [{"op": "added", "key": k, "record": r, "before": None}
                       for k, r in sorted(published.expected["movies"][1].items())]


def test_versions_that_are_not_announced_are_404(client: FlaskClient) -> None:
    error_of(client.get("/v1/datasets/movies/versions/4/changes"), 404, "DatasetNotFound")
    error_of(client.get("/v1/datasets/movies/versions/0/changes"), 404, "DatasetNotFound")
    assert client.get("/v1/datasets/movies/versions/-1/changes").status_code == 404


# -- the rest of the surface ------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_write_methods_are_405(client: FlaskClient, method: str) -> None:
    for path in ("/v1/datasets/movies/records/m2", "/v1/datasets/movies", "/v1/datasets"):
        response = client.open(path, method=method)
        error_of(response, 405, "MethodNotAllowed")
        assert "GET" in response.headers["Allow"]
    error_of(client.post("/v1/datasets/movies/records/m2"), 405, "MethodNotAllowed")


def test_path_tricks_never_reach_the_store(client: FlaskClient, published: Published,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    published.publish("hidden", [("secret", {"v": 1})])  # in the store, not served
    reads: list[str] = []
    original = LocalStore.read

    def spy(self: LocalStore, path: str) -> bytes:
        reads.append(path)
        return original(self, path)

    monkeypatch.setattr(LocalStore, "read", spy)
    for path in ("/v1/datasets/hidden/records/secret", "/v1/datasets/..%2Fhidden/records/secret",
                 "/v1/datasets/movies/..%2F..%2Fhidden/records/secret", "/v1/datasets/%2E%2E/versions",
                 "/v1/datasets/movies/records/..%2F..%2Fhidden%2Fannounced.json", "/v1/datasets/../hidden",
                 "/v1/datasets/movies%2F..%2Fhidden/versions/1/changes"):
        assert client.get(path).status_code == 404, path
    assert reads == []


def test_unknown_route_is_a_json_404(client: FlaskClient) -> None:
    error_of(client.get("/v2/anything"), 404, "NotFound")


def test_health_readiness_openapi_and_explorer(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"ready": True, "waiting": {}}
    spec = client.get("/openapi.json")
    assert spec.get_json() == json.loads((REPO / "consumer/server/openapi.json").read_text())
    page = client.get("/")
    assert page.status_code == 200 and b"combe explorer" in page.get_data() and page.headers["X-Combe-Version"]
    with client.get("/static/explorer.js") as script:
        assert script.status_code == 200 and script.headers["X-Combe-Version"]


def test_metrics_in_prometheus_text_format(client: FlaskClient) -> None:
    client.get("/v1/datasets/movies/records/m2")
    client.get("/v1/datasets/movies/records/m1")
    text = client.get("/metrics").get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["combe_http_requests"].samples
                if s.name.endswith("_total")}
    assert requests[("/v1/datasets/<name>/records/<path:key>", "200")] >= 1
    assert requests[("/v1/datasets/<name>/records/<path:key>", "404")] >= 1
    buckets = [s for s in families["combe_http_request_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets and any(s.labels["le"] == "+Inf" for s in buckets)

    def gauge(name: str) -> dict[str, float]:
        return {s.labels["dataset"]: s.value for s in families[name].samples}

    assert gauge("combe_dataset_version") == {"movies": 3, "counts": 1}
    assert gauge("combe_dataset_ready") == {"movies": 1, "counts": 1}
    assert gauge("combe_dataset_records")["counts"] == 10
    assert 0 <= gauge("combe_dataset_staleness_seconds")["movies"] < 60
    assert {s.labels["dataset"]: s.value for s in families["combe_dataset_refresh_errors"].samples
            if s.name.endswith("_total")} == {"movies": 0, "counts": 0}


# -- a server of its own: refresh, readiness, refresh errors ----------------------------


def test_not_ready_until_published_then_follows_new_versions(tmp_path: Path) -> None:
    published = Published(tmp_path / "store", tmp_path)
    published.publish("other", [("a", {"x": 1})])  # the store exists; "films" does not yet
    app = create_app(str(published.store), ["films"], settings=Settings(refresh_interval=0.1, ready_wait=0))
    client = app.test_client()
    try:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "films" in ready.get_json()["waiting"]
        error_of(client.get("/v1/datasets/films/records/a"), 503, "DatasetNotReady")

        published.publish("films", [("a", movie(1)), ("b", movie(2))])
        _wait(lambda: client.get("/readyz").status_code == 200)
        first = client.get("/v1/datasets/films/records/a")
        unchanged = client.get("/v1/datasets/films/records/b")
        assert first.headers["X-Combe-Version"] == "1"

        published.publish("films", [("a", movie(1, title="changed"))])
        _wait(lambda: client.get("/v1/datasets/films").get_json()["version"] == 2)
        second = client.get("/v1/datasets/films/records/a", headers={"If-None-Match": first.headers["ETag"]})
        assert second.status_code == 200 and second.get_json()["record"]["title"] == "changed"
        assert second.headers["X-Combe-Version"] == "2"
        # The body of b changed too (it names the version), so its old ETag no longer matches.
        assert client.get("/v1/datasets/films/records/b",
                          headers={"If-None-Match": unchanged.headers["ETag"]}).status_code == 200
    finally:
        app.extensions["combe"].close()


def test_refresh_errors_are_counted_and_shown(tmp_path: Path) -> None:
    published = Published(tmp_path / "store", tmp_path)
    published.publish("films", [("a", movie(1))])
    app = create_app(str(published.store), ["films"], settings=Settings(refresh_interval=0.05))
    client = app.test_client()
    announced = published.store / "films" / "announced.json"
    good = announced.read_bytes()
    try:
        announced.write_bytes(b"{ truncated")
        _wait(lambda: client.get("/v1/datasets/films").get_json()["staleness"]["last_error"] is not None)
        assert client.get("/v1/datasets/films/records/a").status_code == 200  # the last good version serves on
        text = client.get("/metrics").get_data(as_text=True)
        errors = [s.value for f in text_string_to_metric_families(text) if f.name == "combe_dataset_refresh_errors"
                  for s in f.samples if s.name.endswith("_total")]
        assert errors and errors[0] >= 1
    finally:
        announced.write_bytes(good)
        app.extensions["combe"].close()


def _wait(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# -- combe serve: gunicorn workers and the development server ---------------------------


def accept_queue(port: int) -> int:
    """Connections waiting in the kernel for a worker to accept them on ``port`` (Linux: /proc/net/tcp*)."""
    waiting = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # LISTEN: rx_queue is the backlog
                waiting += int(queues.split(":")[1], 16)
    return waiting


def accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow  # a gunicorn master and two workers (make check serves with workers in test_server_hostile.py)
def test_serve_with_gunicorn_workers_sharing_one_cache(published: Published, tmp_path: Path) -> None:
    cache, metrics = tmp_path / "cache", tmp_path / "metrics"
    metrics.mkdir()
    process, base = start_serve(published, "--workers", "2", "--cache-dir", str(cache),
                                env={"PROMETHEUS_MULTIPROC_DIR": str(metrics)})
    host, port = base.removeprefix("http://").split(":")
    try:
        status, headers, body = fetch(f"{base}/v1/datasets/movies/records/m2")
        assert status == 200 and headers["X-Combe-Version"] == "3"
        assert json.loads(body)["record"] == published.latest("movies")["m2"]
        for _ in range(10):
            assert fetch(f"{base}/v1/datasets/counts/records/3")[0] == 200
        workers = children(process.pid)
        assert len(workers) == 2
        # Each worker writes its counters to the shared directory (it counts its refresh errors every second),
        # and a scrape of either one counts every request.
        _wait(lambda: {f"counter_{pid}.db" for pid in workers} <= {f.name for f in metrics.iterdir()})
        text = fetch(f"{base}/metrics")[2].decode()
        requests = sum(s.value for f in text_string_to_metric_families(text) if f.name == "combe_http_requests"
                       for s in f.samples if s.name.endswith("_total") and s.labels["route"].endswith("<path:key>"))
        assert requests == 11

        def both_map_the_cache() -> bool:
            cached = [str(p) for p in cache.glob("*.arrow")]
            return bool(cached) and all(any(path in Path(f"/proc/{pid}/maps").read_text() for path in cached)
                                        for pid in workers)

        _wait(both_map_the_cache)  # one copy of each blob on disk, mapped by both workers

        chunked = http.client.HTTPConnection(host, int(port), timeout=5)
        chunked.request("POST", "/v1/datasets/movies/records:batchGet", encode_chunked=True,
                        body=iter([b'{"keys": ["', b"x" * (2 << 20), b'"]}']))  # no Content-Length, over 1 MiB
        assert chunked.getresponse().status == 413
        chunked.close()

        # Graceful stop: a request in flight when SIGTERM arrives is still answered.
        with socket.create_connection((host, int(port)), timeout=5) as slow:
            slow.sendall(b"GET /v1/datasets/movies/records/m4 HTTP/1.1\r\nHost: test\r\n")
            _wait(lambda: accept_queue(int(port)) == 0)  # a worker has taken the connection
            process.send_signal(signal.SIGTERM)
            _wait(lambda: not accepts(host, int(port)))  # the server is stopping: it takes no new connection
            assert process.poll() is None
            slow.sendall(b"Connection: close\r\n\r\n")
            assert slow.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_serve_dev_server_stops_cleanly_on_sigterm(published: Published) -> None:
    process, base = start_serve(published, "--dev")
    try:
        status, headers, _ = fetch(f"{base}/v1/datasets/movies/records/nope")
        assert status == 404 and headers["X-Combe-Version"] == "3"
    finally:
        code, err = stop(process)
    assert code == 0, err


def test_serve_refuses_bad_options(published: Published) -> None:
    result = subprocess.run([sys.executable, "-m", "combe", "serve", "--store", str(published.store)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--dataset" in result.stderr
    result = subprocess.run([sys.executable, "-m", "combe", "serve", "--store", str(published.store), "--dataset",
                             "movies", "--page-size", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--page-size" in result.stderr


# -- X-Combe-Min-Version: a client never goes back -------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "9" * 19, "٣"])
def test_bad_min_version_is_400(client: FlaskClient, value: str) -> None:
    assert "X-Combe-Min-Version" in error_of(client.get("/v1/datasets/movies/records/m2",
                                                        headers={"X-Combe-Min-Version": value}), 400, "RequestError")


def test_min_version_already_served_answers_at_once(client: FlaskClient) -> None:
    response = client.get("/v1/datasets/movies/records/m2", headers={"X-Combe-Min-Version": "2"})
    assert response.status_code == 200 and response.headers["X-Combe-Version"] == "3"


def test_min_version_makes_a_lagging_server_refresh_or_say_why_not(tmp_path: Path) -> None:
    published = Published(tmp_path / "store", tmp_path)
    published.publish("films", [("a", movie(1))])
    app = create_app(str(published.store), ["films"], settings=Settings(refresh_interval=3600))  # never on its own
    client = app.test_client()
    try:
        published.publish("films", [("a", movie(1, title="second"))])
        assert client.get("/v1/datasets/films/records/a").headers["X-Combe-Version"] == "1"  # behind
        response = client.get("/v1/datasets/films/records/a", headers={"X-Combe-Min-Version": "2"})
        assert response.status_code == 200 and response.headers["X-Combe-Version"] == "2"
        assert response.get_json()["record"]["title"] == "second"
        # A version the store has not announced: 409, nothing to wait for.
        late = client.get("/v1/datasets/films/versions", headers={"X-Combe-Min-Version": "3"})
        assert "newest announced" in error_of(late, 409, "VersionNotAvailable")
        # Announced, but it cannot be loaded (its blobs are gone): 503, retry later; version 2 serves on.
        published.publish("films", [("a", movie(1, title="third"))])
        for blob in (published.store / "films" / "blobs").glob("delta-2-3-*"):
            blob.unlink()
        for blob in (published.store / "films" / "blobs").glob("snapshot-3-*"):
            blob.unlink()
        stuck = client.get("/v1/datasets/films/records/a", headers={"X-Combe-Min-Version": "3"})
        assert "has not reached it yet" in error_of(stuck, 503, "VersionNotReached")
        assert stuck.headers["Retry-After"] == "1"
        assert client.get("/v1/datasets/films/records/a").headers["X-Combe-Version"] == "2"
    finally:
        app.extensions["combe"].close()


@pytest.mark.slow  # a server with three workers, refreshing while versions are published
def test_a_client_sending_min_version_never_goes_back_across_workers(tmp_path: Path) -> None:
    """Three workers that refresh on their own while versions are published: with the header, never backwards."""
    published = publish_all(tmp_path)
    process, base = start_serve(published, "--workers", "3", "--refresh-interval", "0.7")
    done = threading.Event()

    def publish_more() -> None:
        for i in range(6):
            published.publish("movies", [("m2", movie(2, title=f"edition {i}"))])
            if done.wait(0.3):
                return

    publisher = threading.Thread(target=publish_more, name="test-publisher")
    publisher.start()
    seen, newest = [], 0
    try:
        while publisher.is_alive() or len(seen) < 100:
            status, headers, body = fetch(f"{base}/v1/datasets/movies/records/m2",
                                          {"X-Combe-Min-Version": str(newest)} if newest else {})
            assert status == 200, body
            version = int(headers["X-Combe-Version"])
            assert json.loads(body)["version"] == version
            seen.append(version)
            newest = max(newest, version)
        # The last version published (3, then 6 more): any worker answers from it when asked to.
        status, headers, _ = fetch(f"{base}/v1/datasets/movies/records/m2", {"X-Combe-Min-Version": "9"})
        assert status == 200 and headers["X-Combe-Version"] == "9"
    finally:
        done.set()
        publisher.join()
        code, err = stop(process)
    assert code == 0, err
    assert seen == sorted(seen)  # never a version older than one already seen


# -- what combe serve checks before serving ---------------------------------------------


def test_json_columns_are_queried_by_equality(published: Published) -> None:
    app = create_app(str(published.store), ["movies"], settings=Settings(index=("tags",)))
    client = app.test_client()
    try:
        body = client.get('/v1/datasets/movies/query?tags=["classic","4"]').get_json()
        assert body["records"] == [published.latest("movies")["m4"]]
        assert client.get('/v1/datasets/movies/query?tags=["nope"]').get_json()["records"] == []
        assert "equality only" in error_of(client.get("/v1/datasets/movies/query?tags.gte=[]"), 400, "RequestError")
        assert "not valid JSON" in error_of(client.get("/v1/datasets/movies/query?tags=[classic"), 400, "RequestError")
        assert "too deeply" in error_of(client.get("/v1/datasets/movies/query?tags=" + "[" * 5000), 400,
                                        "RequestError")
    finally:
        app.extensions["combe"].close()


def test_an_index_field_no_dataset_has_is_refused(published: Published) -> None:
    with pytest.raises(ConfigError, match="cannot index 'titel'.*indexable fields: movies: title, year, genre, "
                                          "rating, tags; counts: n, square"):
        create_app(str(published.store), ["movies", "counts"], settings=Settings(index=("genre", "titel")))


def test_an_index_field_of_a_type_no_query_matches_is_refused() -> None:
    schemas = {"files": Schema("key", "string", {"name": "string", "data": "binary"})}
    with pytest.raises(ConfigError, match="cannot index 'data': it holds binary values in files; "
                                          "indexable fields: files: name"):
        check_index(("name", "data"), schemas)
    check_index(("absent",), schemas, every_schema=False)  # another dataset, not read yet, may have it


def serve_briefly(published: Published, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "combe", "serve", "--store", str(published.store),
                           "--ready-wait", "120", *args], capture_output=True, text=True, timeout=60, check=False)


def test_serve_refuses_an_index_field_at_start(published: Published) -> None:
    result = serve_briefly(published, "--dataset", "movies", "--index", "year", "--index", "rank")
    assert result.returncode == 2
    assert "cannot index 'rank'" in result.stderr and "movies: title, year, genre, rating, tags" in result.stderr


def test_serve_refuses_a_dataset_the_store_does_not_have_at_once(published: Published) -> None:
    # serve_briefly gives up after 60 s, half of --ready-wait: an exit at all means it did not wait.
    result = serve_briefly(published, "--dataset", "movies", "--dataset", "moveis")
    assert result.returncode == 1 and "'moveis' does not exist" in result.stderr
