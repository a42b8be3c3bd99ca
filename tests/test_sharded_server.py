"""The HTTP endpoint on sharded datasets: whole, or some shards (421 for a key of another), in process and as
``combe serve --shards``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from combe.cli.options import shard_list
from combe.consumer.server import Settings, create_app
from combe.consumer.server.checks import check_datasets
from combe.format.errors import ConfigError
from tests.support.changelog import append_jsonl
from tests.support.served import Published, fetch, start_serve, stop
from tests.support.sharded import ShardedWriter

RECORDS = {f"u{i}": {"name": f"user {i}", "team": f"t{i % 3}"} for i in range(60)}


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> ShardedWriter:
    root = tmp_path_factory.mktemp("sharded-served")
    writer = ShardedWriter(str(root / "store"), "users", 4, root)
    writer.publish(list(RECORDS.items()))
    return writer


def open_app(writer: ShardedWriter, shards: list[int] | None) -> Flask:
    return create_app(writer.dataset.root.url, ["users"], shards=shards, settings=Settings(index=("team",)))


@pytest.fixture(scope="module")
def one_shard(writer: ShardedWriter) -> Iterator[Flask]:
    app = open_app(writer, [1])
    yield app
    app.extensions["combe"].close()


def error(response: Any, status: int, kind: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()["error"]
    assert body["type"] == kind and body["status"] == status
    return str(body["message"])


def test_a_server_of_one_shard_answers_its_keys_and_421_for_the_others(one_shard: Flask,
                                                                       writer: ShardedWriter) -> None:
    client: FlaskClient = one_shard.test_client()
    mine = [k for k in RECORDS if writer.shard_of(k) == 1]
    other = next(k for k in RECORDS if writer.shard_of(k) != 1)
    assert mine
    for key in mine:
        answer = client.get(f"/v1/datasets/users/records/{key}")
        assert answer.status_code == 200 and answer.get_json()["record"] == {"key": key, **RECORDS[key]}
        assert answer.headers["X-Combe-Version"] == "1"
    absent = next(f"x{i}" for i in range(500) if writer.shard_of(f"x{i}") == 1)
    error(client.get(f"/v1/datasets/users/records/{absent}"), 404, "RecordNotFound")
    message = error(client.get(f"/v1/datasets/users/records/{other}"), 421, "ShardNotHeld")
    assert f"is in shard {writer.shard_of(other)}; this consumer holds shards 1 of 4" in message
    batch = client.post("/v1/datasets/users/records:batchGet", json={"keys": [mine[0], absent, mine[-1]]})
    assert batch.get_json()["records"] == [{"key": mine[0], **RECORDS[mine[0]]}, None,
                                           {"key": mine[-1], **RECORDS[mine[-1]]}]
    error(client.post("/v1/datasets/users/records:batchGet", json={"keys": [mine[0], other]}), 421, "ShardNotHeld")
    found = client.get("/v1/datasets/users/query?team=t1").get_json()["records"]
    assert [r["key"] for r in found] == sorted(k for k in mine if RECORDS[k]["team"] == "t1")
    described = client.get("/v1/datasets/users").get_json()
    assert described["shards"] == {"count": 4, "held": [1]} and described["records"] == len(mine)
    for route in ("versions", "versions/1/changes", "diff?from=1", f"history/{mine[0]}"):
        assert "users is sharded" in error(client.get(f"/v1/datasets/users/{route}"), 400, "RequestError")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'combe_dataset_records{{dataset="users"}} {len(mine)}.0' in metrics


def test_a_server_of_every_shard_answers_every_key(writer: ShardedWriter) -> None:
    app = open_app(writer, None)
    try:
        client = app.test_client()
        keys = list(RECORDS)
        batch = client.post("/v1/datasets/users/records:batchGet", json={"keys": keys}).get_json()
        assert batch["records"] == [{"key": k, **RECORDS[k]} for k in keys]
        assert client.get("/v1/datasets/users").get_json()["shards"] == {"count": 4, "held": [0, 1, 2, 3]}
    finally:
        app.extensions["combe"].close()


def test_shards_are_checked_before_serving(writer: ShardedWriter, tmp_path: Path) -> None:
    store = writer.dataset.root.url
    check_datasets(store, ["users"], (), shards=(0, 3))
    with pytest.raises(ConfigError, match="has shards 0 to 3"):
        check_datasets(store, ["users"], (), shards=(4,))
    from combe.format.dataset import Dataset
    from combe.producer import Publisher, open_source

    log = tmp_path / "plain.jsonl"
    append_jsonl(log, [("a", {"n": 1})])
    with open_source(str(log)) as source:
        Publisher(Dataset.open(store, "plain"), source).run_cycle()
    with pytest.raises(ConfigError, match="'plain' is not sharded"):
        check_datasets(store, ["users", "plain"], (), shards=(0,))


@pytest.mark.parametrize(("text", "expected"), [("0-3", (0, 1, 2, 3)), ("5", (5,)), ("3,1", (1, 3)),
                                                ("0-1, 4", (0, 1, 4)), ("2-2", (2,))])
def test_shard_lists(text: str, expected: tuple[int, ...]) -> None:
    assert shard_list(text) == expected


@pytest.mark.parametrize("text", ["", "a", "3-1", "-1", "1-", "1,,2", "0-x"])
def test_bad_shard_lists(text: str) -> None:
    with pytest.raises(ConfigError, match="--shards"):
        shard_list(text)


def test_combe_serve_shards(writer: ShardedWriter) -> None:
    published = Published(Path(writer.dataset.root.url), writer.folder)
    process, base = start_serve(published, "--shards", "2-3", datasets=("users",))
    try:
        status, _, body = fetch(f"{base}/v1/datasets/users")
        assert status == 200 and json.loads(body)["shards"] == {"count": 4, "held": [2, 3]}
        for key, value in RECORDS.items():
            status, _, body = fetch(f"{base}/v1/datasets/users/records/{key}")
            if writer.shard_of(key) in (2, 3):
                assert status == 200 and json.loads(body)["record"] == {"key": key, **value}
            else:
                assert status == 421 and json.loads(body)["error"]["type"] == "ShardNotHeld"
    finally:
        code, output = stop(process)
    assert code == 0, output
