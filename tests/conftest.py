"""Shared fixtures. Services (Kafka broker, S3 server) are real processes on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.kafka_broker import KafkaBroker


@pytest.fixture(autouse=True)
def no_leaked_refreshers() -> Iterator[None]:
    """Fail a test that leaves a consumer's refresh thread running (close() your consumers)."""
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [t.name for t in threading.enumerate()
              if t.ident not in before and t.name.startswith("combe-refresh") and t.is_alive()]
    assert not leaked, f"refresher threads left running: {leaked}"


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One real Kafka broker for the whole session: starting one costs seconds, topics are cheap."""
    from tests.support.kafka_broker import KafkaBroker  # imported here: only Kafka tests need confluent-kafka

    with KafkaBroker() as broker:
        yield broker
