"""The HTTP endpoint against its OpenAPI spec: schemathesis generates requests, valid and invalid, from the spec
and checks every answer (no server error, documented status, content type, headers and body schema)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance
from flask import Flask
from hypothesis import HealthCheck, settings

from combe.consumer.server import Settings, create_app
from tests.support.properties import examples
from tests.support.served import publish_all

SPEC = Path(__file__).resolve().parent.parent / "consumer" / "server" / "openapi.json"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    published = publish_all(tmp_path_factory.mktemp("openapi"))
    app = create_app(str(published.store), ["movies", "counts"], settings=Settings(index=("genre", "year")))
    yield app
    app.extensions["combe"].close()


def load_spec() -> Any:
    spec = json.loads(SPEC.read_text())
    # Draw dataset names from the served ones (and one that is not), so that generated requests
    # reach records, queries and versions instead of stopping at "no such dataset".
    spec["components"]["parameters"]["name"]["schema"] = {"type": "string", "enum": ["movies", "counts", "absent"]}
    return schemathesis.openapi.from_dict(spec)


schema = load_spec()


@schema.parametrize()
@settings(max_examples=examples(40), deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_spec(case: Any, app: Flask) -> None:
    # Whether a key or a query field is valid depends on the dataset's schema (int64 or string keys,
    # which fields have indexes), which one static spec cannot say; those answers are documented 400s,
    # so the check that every schema-valid request is accepted does not apply. Every other check does.
    case.call_and_validate(app=app, excluded_checks=[positive_data_acceptance])


def test_spec_covers_every_api_route(app: Flask) -> None:
    """Every JSON route the app has is in the spec, with the methods it answers."""
    spec = json.loads(SPEC.read_text())
    documented = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "combe_api.explorer", "combe_api.openapi"):
            continue
        path = (rule.rule.replace("<path:key>", "{key}").replace("<int:version>", "{version}")
                .replace("<name>", "{name}"))
        routes |= {(path, m) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    assert routes == documented
