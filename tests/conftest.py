"""Shared fixtures. Services (Kafka broker, S3 server) are real processes on 127.0.0.1."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings

from tests.support import shared

if TYPE_CHECKING:
    from combe.format.store import Store
    from tests.support.fault_proxy import FaultProxy
    from tests.support.kafka_broker import KafkaBroker
    from tests.support.s3_server import S3Server


# The session fixture that starts each service -> the marker of the tests that use it (directly or through
# another fixture). `make check` deselects the marked tests: it runs where no broker can start (no Java or
# Maven) and no browser is installed. A test that starts a service itself carries the marker in its module.
SERVICE_MARKERS = {"kafka_broker": "kafka", "s3_server": "s3"}


# `make check` loads this profile (--hypothesis-profile=check): every property test tries a tenth of the
# examples it tries under hypothesis's default profile, which `make test` keeps (explicit counts scale alike:
# tests/support/properties.py). The same properties over the same strategies, checked less thoroughly on the
# fast path; make test, which runs before anything lands, tries them all.
settings.register_profile("check", max_examples=settings.get_profile("default").max_examples // 10)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & SERVICE_MARKERS.keys():
            item.add_marker(SERVICE_MARKERS[fixture])


@pytest.fixture(autouse=True)
def no_leaked_refreshers() -> Iterator[None]:
    """Fail a test that leaves a consumer's refresh thread running (close() your consumers)."""
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [t.name for t in threading.enumerate()
              if t.ident not in before and t.name.startswith("combe-refresh") and t.is_alive()]
    assert not leaked, f"refresher threads left running: {leaked}"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the run's main process: xdist's controller, or the only one
        shared.open_run()


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        shared.close_run()


@pytest.fixture(scope="session")
def kafka_broker() -> KafkaBroker:
    """One real Kafka broker for the whole run, all xdist workers included: starting one costs seconds, topics
    are cheap (each test makes its own, uniquely named). Never kill or restart it: start your own for that."""
    from tests.support.kafka_broker import KafkaBroker  # imported here: only Kafka tests need confluent-kafka

    return shared.shared("kafka", KafkaBroker(), KafkaBroker.attach)


@pytest.fixture(scope="session")
def s3_server() -> S3Server:
    """One S3 server (moto, over HTTP) for the whole run, all xdist workers included; tests use fresh prefixes
    of its bucket."""
    from tests.support.s3_server import BUCKET, S3Server  # imported here: only S3 tests need moto

    server = shared.shared("s3", S3Server(), S3Server.attach)
    server.make_bucket(BUCKET)  # idempotent: each process makes sure, whichever started the server
    return server


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    """A fresh, empty ``s3://`` store in the test bucket."""
    from tests.support.s3_server import BUCKET

    return f"s3://{BUCKET}/{uuid.uuid4().hex}"


@pytest.fixture
def s3_store_factory(s3_server: S3Server) -> Callable[..., Store]:
    """Opens a store at a fresh prefix of the test bucket, optionally through another endpoint (a proxy)."""
    from combe.format.store import open_store
    from tests.support.s3_server import BUCKET

    def make(endpoint_url: str | None = None, **options: Any) -> Store:
        storage_options = {**s3_server.storage_options(endpoint_url), **options}
        return open_store(f"s3://{BUCKET}/{uuid.uuid4().hex}", storage_options)

    return make


@pytest.fixture
def fault_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A proxy in front of the S3 server that fails, delays or drops requests on cue and logs them."""
    from tests.support.fault_proxy import FaultProxy

    with FaultProxy(s3_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A local store in the test's own directory."""
    return str(tmp_path / "store")


@pytest.fixture
def changelog(tmp_path: Path) -> Path:
    """An empty JSONL changelog; tests append to it (files may override with their own data)."""
    path = tmp_path / "movies.jsonl"
    path.touch()
    return path
