"""The router against two real ``combe serve --shards`` processes on a sharded dataset published with combe."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from router import Router, fetch, parse_upstreams

from combe.format.commit import commit
from combe.format.dataset import Dataset
from combe.format.manifest import utc_now
from combe.format.partition import partition_of
from combe.format.sharded import Sharding
from combe.producer import Publisher, open_source

# Each test publishes a sharded dataset and starts two servers (four interpreters).
pytestmark = pytest.mark.slow

COUNT = 4


def publish(store: str, folder: Path, changes: dict[str, dict[str, Any]]) -> None:
    """One version of the sharded dataset ``users``: each shard folds its own keys, then one commit."""
    dataset = Dataset.open(store, "users")
    sharding = dataset.create_sharding(Sharding("users", COUNT, "key", "string", utc_now(), "example"))
    for shard in range(COUNT):
        log = folder / f"users-{shard}.jsonl"
        with open(log, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"key": k, "value": v}) + "\n" for k, v in changes.items()
                              if partition_of(k, "string", COUNT) == shard)
        with open_source(str(log)) as source:
            Publisher(dataset.shard(shard, COUNT), source).run_cycle()
    assert commit(dataset, sharding, producer="example").outcome == "committed"


def serve(store: str, shards: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    process = subprocess.Popen([sys.executable, "-m", "combe", "serve", "--store", store, "--dataset", "users",
                                "--shards", shards, "--port", str(port), "--refresh-interval", "3600",
                                # One worker: the tests move a server to a version by asking it, and a second
                                # worker (gunicorn's default is 2) would still answer from the version before.
                                "--workers", "1"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, process.communicate()[1].decode()
        try:
            if fetch(f"{base}/readyz")[0] == 200:
                return process, base
        except OSError:
            pass
        assert time.monotonic() < deadline, "combe serve did not become ready"
        time.sleep(0.1)


USERS = {f"u-{i}": {"name": f"user {i}", "v": 1} for i in range(40)}


@pytest.fixture
def router(tmp_path: Path) -> Iterator[tuple[Router, str, Path]]:
    store = str(tmp_path / "store")
    publish(store, tmp_path, USERS)
    servers = [serve(store, "0-1"), serve(store, "2-3")]
    try:
        yield Router("users", parse_upstreams([f"0-1={servers[0][1]}", f"2-3={servers[1][1]}"])), store, tmp_path
    finally:
        for process, _ in servers:
            process.terminate()
            process.communicate(timeout=30)


def call(app: Router, method: str, path: str, body: bytes = b"") -> tuple[str, dict[str, str], Any]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": BytesIO(body),
               "CONTENT_LENGTH": str(len(body))}
    data = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], json.loads(data)


def test_routes_each_key_to_the_server_of_its_shard(router: tuple[Router, str, Path]) -> None:
    app, _, _ = router
    for key, value in USERS.items():
        status, headers, body = call(app, "GET", f"/v1/datasets/users/records/{key}")
        assert status == "200 OK" and body["record"] == {"key": key, **value} and headers["X-Combe-Version"] == "1"
    status, _, body = call(app, "GET", "/v1/datasets/users/records/nobody")
    assert status == "404 Not Found" and body["error"]["type"] == "RecordNotFound"
    keys = [*reversed(USERS), "nobody", "u-3"]
    status, _, body = call(app, "POST", "/v1/datasets/users/records:batchGet", json.dumps({"keys": keys}).encode())
    assert status == "200 OK" and body["version"] == 1
    assert body["records"] == [{"key": k, **USERS[k]} if k in USERS else None for k in keys]
    assert call(app, "GET", "/v1/datasets/users/query?name=x")[0] == "404 Not Found"


def test_a_batch_answers_from_one_version(router: tuple[Router, str, Path]) -> None:
    app, store, folder = router
    publish(store, folder, {k: {"name": v["name"], "v": 2} for k, v in USERS.items()})
    # The server of shards 0-1 moves to version 2 (a client asked it for that); the other still serves 1.
    first = app.upstreams[0]
    status, headers, _ = fetch(f"{first}/v1/datasets/users", headers={"X-Combe-Min-Version": "2"})
    assert status == 200 and headers["X-Combe-Version"] == "2"
    other = app.upstreams[2]
    assert fetch(f"{other}/v1/datasets/users")[1]["X-Combe-Version"] == "1"
    status, headers, body = call(app, "POST", "/v1/datasets/users/records:batchGet",
                                 json.dumps({"keys": list(USERS)}).encode())
    assert status == "200 OK" and body["version"] == 2 and headers["X-Combe-Version"] == "2"
    assert {record["v"] for record in body["records"]} == {2}
