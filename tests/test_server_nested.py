"""The HTTP endpoint over nested columns: records, batches and version changes answer nested values as JSON."""

from __future__ import annotations

import json
from urllib.parse import quote
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from combe.consumer.server import Settings, create_app
from combe.consumer.server.checks import check_datasets
from combe.format.errors import ConfigError
from tests.support.served import ANN_JSON, publish_nested


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    store = str(tmp_path_factory.mktemp("nested"))
    publish_nested(store)
    return store


@pytest.fixture(scope="module")
def app(store: str) -> Iterator[Flask]:
    app = create_app(store, ["nested"], settings=Settings(index=("tags", "who", "ids")))
    yield app
    app.extensions["combe"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def body(response: Any) -> Any:
    assert response.status_code == 200, response.get_data(as_text=True)
    return json.loads(response.get_data())  # the raw JSON text, not flask's reading of it


def test_records_answer_nested_values_as_json(client: FlaskClient) -> None:
    assert body(client.get("/v1/datasets/nested/records/a"))["record"] == ANN_JSON
    assert body(client.get("/v1/datasets/nested/records/b"))["record"] == {
        "key": "b", "tags": None, "who": {"id": 2, "name": None, "age": 40}, "ids": None, "raw": None, "doc": None}
    records = body(client.post("/v1/datasets/nested/records:batchGet", json={"keys": ["c", "a", "x"]}))["records"]
    assert records == [{"key": "c", "tags": None, "who": None, "ids": {}, "raw": None, "doc": None}, ANN_JSON, None]


def test_the_schema_names_nested_types(client: FlaskClient) -> None:
    schema = body(client.get("/v1/datasets/nested"))["schema"]
    assert schema == [{"name": "key", "type": "string"}, {"name": "tags", "type": "list<string>"},
                      {"name": "who", "type": "struct<id:int64,name:string,age:int64>"},
                      {"name": "ids", "type": "map<int64,list<float64>>"}, {"name": "raw", "type": "list<binary>"},
                      {"name": "doc", "type": "json"}]


def test_version_changes_answer_nested_values_before_and_after(client: FlaskClient) -> None:
    changes = body(client.get("/v1/datasets/nested/versions/2/changes"))["changes"]
    assert changes == [
        {"op": "updated", "key": "b",
         "record": {"key": "b", "tags": None, "who": {"id": 2, "name": None, "age": 40}, "ids": None, "raw": None,
                    "doc": None},
         "before": {"key": "b", "tags": [], "who": None, "ids": None, "raw": None, "doc": None}},
        {"op": "added", "key": "c",
         "record": {"key": "c", "tags": None, "who": None, "ids": {}, "raw": None, "doc": None}, "before": None}]
    first = body(client.get("/v1/datasets/nested/versions/1/changes"))["changes"]
    assert first[0]["record"] == {**ANN_JSON, "who": {"id": 1, "name": "Ann"}}  # in version 1's schema


def query(client: FlaskClient, params: str) -> list[str]:
    return [record["key"] for record in body(client.get("/v1/datasets/nested/query?" + params))["records"]]


def test_nested_fields_are_queried_by_equality_with_json_values(client: FlaskClient) -> None:
    assert body(client.get("/v1/datasets/nested"))["queryable"] == ["ids", "key", "tags", "who"]
    assert query(client, "tags=" + quote('["a",null]')) == ["a"]
    assert query(client, "tags=" + quote("[]")) == []  # b's tags were [] at version 1 only
    # A struct value may leave out null fields; a map is written as the JSON API answers it (int64 keys as text).
    assert query(client, "who=" + quote('{"id":2,"age":40}')) == ["b"]
    assert query(client, "who=" + quote('{"id":1,"name":"Ann","age":null}')) == ["a"]
    assert query(client, "ids=" + quote('{"-2":[],"7":[1.5,null]}')) == ["a"]
    assert query(client, "ids=" + quote("{}")) == ["c"]
    assert query(client, "who=null") == ["c"]


@pytest.mark.parametrize("params, message", [
    ("tags.gte=" + quote('["a"]'), "tags holds list<string> values, which match by equality only"),
    ("tags=" + quote('["a",1]'), "1 is a int, but column 'tags'[1] holds string values"),
    ("who=" + quote('{"nick":"x"}'), "column 'who' has no field 'nick'"),
    ("ids=" + quote('{"seven":[]}'), "the keys of this map are 64-bit integers, not 'seven'"),
    ("tags=" + quote("[oops"), "is not valid JSON"),
    ("raw=" + quote('["AP8="]'), "'raw' is not an indexed field"),
])
def test_bad_nested_queries_say_what_is_wrong(client: FlaskClient, params: str, message: str) -> None:
    response = client.get("/v1/datasets/nested/query?" + params)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert message in response.get_json()["error"]["message"]


def test_serve_refuses_to_index_a_nested_field_json_cannot_spell(store: str) -> None:
    check_datasets(store, ["nested"], ["tags", "who", "ids"])  # these can be
    with pytest.raises(ConfigError, match=r"cannot index 'raw': it holds list<binary> values in nested; "
                                          r"indexable fields: nested: tags, who, ids, doc"):
        check_datasets(store, ["nested"], ["raw"])

