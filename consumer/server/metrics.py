"""Prometheus metrics of one server: requests, latency, and each dataset's version, staleness and errors.

Under gunicorn every worker is its own process with its own consumers, and a
scrape reaches one of them. prometheus_client's multi-process mode (chosen
by ``PROMETHEUS_MULTIPROC_DIR``, which ``combe serve`` sets before the
workers start) keeps each worker's values in memory-mapped files that any
worker aggregates on a scrape: counters and histograms are summed, and the
dataset gauges say what matters across workers (the lowest version served,
the largest staleness). Each worker refreshes its gauges every second, and
the worker answering the scrape refreshes its own first. The dataset metrics
are the consumer's own (consumer/metrics.py declares and computes them); the
server adds ``combe_dataset_ready`` and counts failed initial loads as
refresh errors.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess, values

from ..metrics import METRICS, samples
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
        self.ready = Gauge("combe_dataset_ready", "1 when the dataset is loaded (across workers: the lowest)",
                           ["dataset"], registry=own, multiprocess_mode="livemin")
        self.dataset: dict[str, Any] = {
            metric.name: Counter(metric.name, metric.help, ["dataset", *metric.labels], registry=own)
            if metric.kind == "counter" else
            Gauge(metric.name, metric.help, ["dataset", *metric.labels], registry=own,
                  multiprocess_mode=metric.across_workers)
            for metric in METRICS}
        self._counted: dict[tuple[str, ...], float] = {}  # (metric, dataset, labels...) -> the count added so far
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
        """Set the dataset metrics from this process's consumers."""
        catalog = self.catalog
        served = catalog.loaded()
        now = time.time()
        with self._lock:
            for name in catalog.names:
                entry = served.get(name)
                self.ready.labels(name).set(1 if entry else 0)
                found = {(metric, labels): value for metric, labels, value in
                         (samples(entry.consumer, now) if entry is not None else [])}
                errors = ("combe_dataset_refresh_errors", ())
                found[errors] = found.get(errors, 0) + catalog.load_errors.get(name, 0)
                for (metric, labels), value in found.items():
                    series = self.dataset[metric].labels(name, *labels)
                    if isinstance(series, Gauge):
                        series.set(value)
                    else:  # counters only go up: add what the consumer counted since the last update
                        counted = (metric, name, *labels)
                        series.inc(max(0.0, value - self._counted.get(counted, 0)))  # inc(0): the series appears
                        self._counted[counted] = value

    def render(self) -> bytes:
        self.update()
        return generate_latest(self.registry)
