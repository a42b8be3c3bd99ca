"""Prometheus metrics of one server: requests, latency, and each dataset's version, staleness and errors.

Under gunicorn every worker is its own process with its own consumers, and a
scrape reaches one of them. prometheus_client's multi-process mode (chosen
by ``PROMETHEUS_MULTIPROC_DIR``, which ``combe serve`` sets before the
workers start) keeps each worker's values in memory-mapped files that any
worker aggregates on a scrape: counters and histograms are summed, and the
dataset gauges say what matters across workers (the lowest version served,
the largest staleness). Each worker refreshes its gauges every second, and
the worker answering the scrape refreshes its own first.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess, values

from .catalog import Catalog

BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def multiprocess_mode() -> bool:
    """Whether prometheus_client was imported with PROMETHEUS_MULTIPROC_DIR set (it decides once, at import)."""
    return values.ValueClass is not values.MutexValue


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.registry = CollectorRegistry()
        shared = multiprocess_mode()
        if shared:
            multiprocess.MultiProcessCollector(self.registry)
        # In multi-process mode values live in the shared files and the collector above reads them;
        # registering the metrics as well would count them twice.
        own = None if shared else self.registry
        self.requests = Counter("combe_http_requests", "HTTP requests answered, by method, route and status",
                                ["method", "route", "status"], registry=own)
        self.latency = Histogram("combe_http_request_duration_seconds", "Seconds to answer a request, by route",
                                 ["route"], buckets=BUCKETS, registry=own)
        self.version = Gauge("combe_dataset_version", "Version served (across workers: the lowest)",
                             ["dataset"], registry=own, multiprocess_mode="livemin")
        self.announced = Gauge("combe_dataset_announced_version", "Version announced in the store when last polled",
                               ["dataset"], registry=own, multiprocess_mode="livemax")
        self.records = Gauge("combe_dataset_records", "Records in the version served",
                             ["dataset"], registry=own, multiprocess_mode="livemostrecent")
        self.staleness = Gauge("combe_dataset_staleness_seconds",
                               "Seconds since the announcement was last checked successfully (across workers: "
                               "the largest)", ["dataset"], registry=own, multiprocess_mode="livemax")
        self.ready = Gauge("combe_dataset_ready", "1 when the dataset is loaded (across workers: the lowest)",
                           ["dataset"], registry=own, multiprocess_mode="livemin")
        self.refresh_errors = Counter("combe_dataset_refresh_errors",
                                      "Failed refreshes and failed initial loads", ["dataset"], registry=own)
        self._counted: dict[str, int] = {}
        # (method, route, status) -> its counter and histogram; routes are rule templates, so this stays small
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._lock = threading.Lock()  # the loader's tick and a scrape may update at the same time

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and its latency (on every request: the labelled series are looked up once)."""
        series = self._series.get((method, route, status))
        if series is None:
            series = self._series[method, route, status] = (self.requests.labels(method, route, str(status)),
                                                             self.latency.labels(route))
        series[0].inc()
        series[1].observe(seconds)

    def update(self) -> None:
        """Set the dataset gauges from this process's consumers."""
        catalog = self.catalog
        served = catalog.loaded()
        now = time.time()
        with self._lock:
            for name in catalog.names:
                errors = catalog.load_errors.get(name, 0)
                entry = served.get(name)
                self.ready.labels(name).set(1 if entry else 0)
                if entry is not None:
                    consumer = entry.consumer
                    status = consumer.status()
                    self.version.labels(name).set(status["version"])
                    self.announced.labels(name).set(status["announced"] or status["version"])
                    self.records.labels(name).set(status["records"])
                    if status["last_refresh"]:
                        self.staleness.labels(name).set(max(0.0, now - status["last_refresh"]))
                    errors += consumer.refresh_errors
                new = errors - self._counted.get(name, 0)
                self.refresh_errors.labels(name).inc(max(0, new))  # inc(0) still makes the series appear
                self._counted[name] = errors

    def render(self) -> bytes:
        self.update()
        return generate_latest(self.registry)
