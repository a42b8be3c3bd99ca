"""register_metrics: one call puts a consumer's metrics in an application's registry; read at each scrape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from combe import register_metrics
from combe.format.errors import ConfigError, ObjectNotFound
from combe.testing import TestDataset
from tests.support.feed import Feed

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, dataset: str = "movies", **labels: str) -> float:
    return samples[(name, tuple(sorted({"dataset": dataset, **labels}.items())))]


def test_one_call_registers_version_staleness_refreshes_and_memory() -> None:
    records = {f"m{i}": {"title": f"Movie {i}", "genre": ("drama", "comedy")[i % 2]} for i in range(50)}
    with TestDataset(records, name="movies") as movies, movies.consumer() as consumer:
        registry = CollectorRegistry()
        register_metrics(consumer, registry=registry)
        first = scrape(registry)
        assert value(first, "combe_dataset_version") == 1 == value(first, "combe_dataset_announced_version")
        assert value(first, "combe_dataset_records") == 50
        assert 0 <= value(first, "combe_dataset_staleness_seconds") < 60
        assert value(first, "combe_dataset_seconds_behind") == 0
        assert value(first, "combe_dataset_last_load_seconds") > 0
        assert value(first, "combe_dataset_refresh_errors_total") == 0
        assert value(first, "combe_dataset_memory_bytes", part="key_index") == 50 * 8  # two int32 per record
        assert value(first, "combe_dataset_memory_bytes", part="columns") > 0
        assert value(first, "combe_dataset_memory_bytes", part="indexes") == 0

        consumer.index("genre")
        assert not consumer.refresh()
        movies.update({"m1": {"title": "One"}, "m2": None})
        assert consumer.refresh()
        later = scrape(registry)  # read from the consumer at the scrape: nothing was updated by hand
        assert value(later, "combe_dataset_version") == 2 and value(later, "combe_dataset_records") == 49
        assert value(later, "combe_dataset_refreshes_total", result="unchanged") == 1
        assert value(later, "combe_dataset_refreshes_total", result="changed") == 1
        assert value(later, "combe_dataset_refresh_seconds_total", result="changed") > 0
        assert value(later, "combe_dataset_overlay_records") == 2
        assert value(later, "combe_dataset_memory_bytes", part="indexes") == 50 * 8  # rows and hashes, int32 each


def test_refresh_failures_are_counted_and_timed(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.publish([("a", {"n": 1}), ("b", {"n": 2})])
    with feed.consumer() as consumer:
        registry = CollectorRegistry()
        register_metrics(consumer, registry=registry)
        version = feed.publish([("a", {"n": 10})])
        feed.blob_file(version, "delta").unlink()  # the store lost the blob: the refresh cannot load it
        with pytest.raises(ObjectNotFound):
            consumer.refresh()
        samples = scrape(registry)
        assert value(samples, "combe_dataset_refresh_errors_total") == 1
        assert value(samples, "combe_dataset_refresh_seconds_total", result="failed") > 0
        assert value(samples, "combe_dataset_version") == 1 and value(samples, "combe_dataset_announced_version") == 2
        assert value(samples, "combe_dataset_seconds_behind") >= 0


def test_several_datasets_in_one_registry() -> None:
    with TestDataset({"a": {"n": 1}}, name="movies") as movies, TestDataset({1: {"n": 1}}, name="counts") as counts:
        with movies.consumer() as first, counts.consumer() as second, counts.consumer() as again:
            registry = CollectorRegistry()
            metrics = register_metrics(first, registry=registry)
            with pytest.raises(ConfigError, match=r"metrics.add\(consumer\)"):
                register_metrics(second, registry=registry)
            metrics.add(second)
            with pytest.raises(ConfigError, match="dataset 'counts' is already"):
                metrics.add(again)
            samples = scrape(registry)
            assert value(samples, "combe_dataset_records", "movies") == value(samples, "combe_dataset_records",
                                                                                "counts") == 1
            metrics.remove(second)
            assert ("combe_dataset_records", (("dataset", "counts"),)) not in scrape(registry)


def test_without_prometheus_client_the_error_names_the_extra() -> None:
    probe = ("import sys; sys.modules['prometheus_client'] = None\n"
             "from combe.testing import TestDataset\nfrom combe import register_metrics\n"
             "with TestDataset({'a': {'n': 1}}) as data, data.consumer() as consumer:\n"
             "    try:\n        register_metrics(consumer)\n"
             "    except Exception as exc:\n        print(type(exc).__name__, exc)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ConfigError consumer metrics need prometheus_client")
    assert "pip install 'combe[metrics]'" in done.stdout


def test_combe_serve_shows_the_same_dataset_metrics(tmp_path: Path) -> None:
    from combe.consumer.metrics import METRICS
    from combe.consumer.server import create_app

    feed = Feed(tmp_path)
    feed.publish([("a", {"n": 1})])
    app = create_app(feed.store, ["movies"])
    try:
        text = app.test_client().get("/metrics").get_data(as_text=True)
    finally:
        app.extensions["combe"].close()
    names: Any = {family.name for family in text_string_to_metric_families(text)}
    assert {metric.name for metric in METRICS} <= names
