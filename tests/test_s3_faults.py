"""The store failing under a running consumer and a publishing producer: 500/503 answers, slow
answers and dropped connections, injected by a proxy in front of moto's S3 server.

A consumer keeps serving the version it has and catches up once the store recovers; a producer
announces nothing partial, and a rerun publishes the right state."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from combe.cli import EXIT_FAILURE, main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.errors import StoreUnavailable
from combe.producer import Publisher, open_source
from tests.support.changelog import Change, append_jsonl, replay
from tests.support.fault_proxy import FaultProxy
from tests.support.feed import Feed, view_state
from tests.support.s3_server import S3Server

pytestmark = pytest.mark.s3

DATASET = "movies"
REFRESH = 0.2
# A small retry budget and short timeouts, so that each failing call gives up within a second.
FAST_FAILING = {"max_attempts": 2, "retry_deadline": 1,
                "config_kwargs": {"connect_timeout": 0.5, "read_timeout": 0.5}}

FIRST: list[Change] = [(f"m{i:03d}", {"title": f"Movie {i}", "year": 1990 + i % 30}) for i in range(300)]
SECOND: list[Change] = [("m001", {"title": "Movie 1 (remastered)", "year": 2001}), ("m002", None),
                        ("m300", {"title": "Movie 300", "year": 2024})]

FAULTS: dict[str, Callable[..., None]] = {
    "503": lambda proxy, **where: proxy.fail(503, **where),
    "500": lambda proxy, **where: proxy.fail(500, **where),
    "slow": lambda proxy, **where: proxy.delay(1.5, **where),
    "dropped": lambda proxy, **where: proxy.drop(**where),
}


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def proxied(s3_server: S3Server, proxy: FaultProxy, **options: Any) -> dict[str, Any]:
    return {**s3_server.storage_options(proxy.url), **FAST_FAILING, **options}


@pytest.fixture
def feed(s3_server: S3Server, s3_url: str, tmp_path: Path) -> Feed:
    """Version 1 published straight to the S3 server (not through the proxy)."""
    feed = Feed(tmp_path, store=s3_url, storage_options=s3_server.storage_options())
    feed.publish(FIRST)
    return feed


# -- the consumer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "where"),
                         [("503", "everything"), ("slow", "everything"), ("dropped", "everything"), ("503", "blobs")])
def test_consumer_keeps_serving_through_a_failing_store_and_catches_up(
    feed: Feed, s3_server: S3Server, fault_proxy: FaultProxy, fault: str, where: str
) -> None:
    """``everything``: not even the poll gets through. ``blobs``: the poll sees version 2, its delta does not come."""
    with feed.consumer(storage_options=proxied(s3_server, fault_proxy), refresh_interval=REFRESH) as consumer:
        assert consumer.version == 1
        FAULTS[fault](fault_proxy, **({"method": "GET", "path": "/blobs/"} if where == "blobs" else {}))
        feed.publish(SECOND)

        assert wait_for(lambda: consumer.status()["refresh_errors"] >= 2)
        assert consumer.version == 1 and view_state(consumer.view()) == feed.states[1]
        assert consumer.get("m002") == {"key": "m002", "title": "Movie 2", "year": 1992}
        status = consumer.status()
        assert status["last_error"] and "gave up after 2 attempt(s)" in status["last_error"]
        assert status["announced"] == (2 if where == "blobs" else 1)

        fault_proxy.clear()
        recovered = time.monotonic()
        assert wait_for(lambda: consumer.version == 2), consumer.status()
        caught_up = time.monotonic() - recovered
        assert view_state(consumer.view()) == feed.states[2]
        # The backoff is capped at 16 refresh intervals, so a consumer is back soon after the store.
        assert caught_up < 16 * REFRESH + 2, caught_up


def test_an_unreachable_store_is_a_clear_error_in_bounded_time(
    s3_server: S3Server, s3_url: str, fault_proxy: FaultProxy, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    fault_proxy.drop()
    started = time.monotonic()
    code = main(["get", "--store", s3_url, "--dataset", DATASET, "--storage-option", f"endpoint_url={fault_proxy.url}",
                 "--storage-option", "retry_deadline=1", "m001"])
    assert code == EXIT_FAILURE
    assert time.monotonic() - started < 1 + 5  # the retry deadline, plus at most one attempt's timeouts
    error = capsys.readouterr().err
    assert f"cannot read {s3_url}/{DATASET}/announced.json: gave up after" in error
    assert f"against endpoint {fault_proxy.url}" in error and "Traceback" not in error


# -- the producer ----------------------------------------------------------------------------------

# (the fault, the request it hits, the attempts a call may make, how a rerun finishes the job)
STAGES: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "blob write fails": ("503", {"method": "PUT", "path": "/blobs/"}, 2, "published"),
    "blob write dropped": ("dropped", {"method": "PUT", "path": "/blobs/"}, 2, "published"),
    "manifest write fails": ("500", {"method": "PUT", "path": "/versions/"}, 2, "published"),
    "manifest write is slow": ("slow", {"method": "PUT", "path": "/versions/"}, 2, "adopted"),
    # S3 wrote the manifest but its answer never came: the version exists, unannounced; a rerun
    # announces it (the stopped producer's version, adopted) rather than skip its number.
    "manifest written, answer lost": ("lost", {"method": "PUT", "path": "/versions/"}, 1, "adopted"),
    "announce fails": ("503", {"method": "PUT", "path": "/announced.json"}, 2, "adopted"),
    "announce dropped": ("dropped", {"method": "PUT", "path": "/announced.json"}, 2, "adopted"),
    # The announcement was written and its answer lost: the run reports a failure, yet version 2 is
    # announced whole, and a rerun finds nothing to do.
    "announced, answer lost": ("lost", {"method": "PUT", "path": "/announced.json"}, 1, "noop"),
}


def check_consistent(dataset: Dataset, feed: Feed) -> int:
    """Every manifest's blobs are there and verify; the announced version reads as its replay."""
    announced = dataset.announced().version
    assert announced is not None
    for version in dataset.versions():
        manifest = dataset.manifest(version)
        for ref in (manifest.snapshot, manifest.delta, manifest.reverse):
            if ref is not None:
                dataset.read_blob(ref)  # raises unless present with the sha256 the manifest records
    with Consumer(feed.store, DATASET, storage_options=feed.storage_options) as consumer:
        assert consumer.version == announced
        assert view_state(consumer.view()) == replay(FIRST + (SECOND if announced == 2 else []))
    return announced


@pytest.mark.parametrize("stage", STAGES)
def test_producer_announces_nothing_partial_when_the_store_fails(
    feed: Feed, s3_server: S3Server, fault_proxy: FaultProxy, stage: str
) -> None:
    fault, where, attempts, rerun = STAGES[stage]
    append_jsonl(feed.path, SECOND)
    options = proxied(s3_server, fault_proxy, max_attempts=attempts)
    publisher = Publisher(Dataset.open(feed.store, DATASET, options), open_source(str(feed.path)))
    if fault == "lost":
        fault_proxy.drop(after_relay=True, **where)
    else:
        FAULTS[fault](fault_proxy, **where)

    with pytest.raises(StoreUnavailable, match="gave up after"):
        publisher.run_cycle()
    assert any(e.method == where["method"] and where["path"] in e.path for e in fault_proxy.exchanges())
    fault_proxy.clear()
    direct = Dataset.open(feed.store, DATASET, feed.storage_options)
    assert check_consistent(direct, feed) == (2 if rerun == "noop" else 1)

    # A rerun (the next cron run, or the daemon's next cycle) publishes the right state.
    result = Publisher(Dataset.open(feed.store, DATASET, options), open_source(str(feed.path))).run_cycle()
    assert (result.outcome, result.version) == (rerun, 2)
    assert check_consistent(direct, feed) == 2
    assert direct.versions() == [1, 2]
