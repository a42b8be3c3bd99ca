"""A consumer's metrics: declared once, computed once, registered in an application's Prometheus registry.

``register_metrics(consumer)`` is the one call a read service makes: it adds
a collector to the application's prometheus_client registry, and every
scrape reads the values from the consumers then (nothing to update, no
thread). ``combe serve`` shows the same metrics (consumer/server/metrics.py):
it takes them from ``samples`` and keeps them in prometheus_client's
multi-process files, so that its workers' values combine (``across_workers``).

prometheus_client is imported by ``register_metrics`` only: a consumer
without it works, and its metrics need the ``metrics`` extra.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from combe.format.errors import ConfigError

from .sharded import ShardedView

if TYPE_CHECKING:
    from .consumer import Consumer
    from .sharded import AnyView
    from .view import View

RESULTS = ("changed", "unchanged", "failed")  # how a refresh ends: a new version served, none, an error


class RefreshStats:
    """How a consumer's refreshes went: how many ended each way and the seconds they took; the last load.

    Written by the refreshing thread, one refresh at a time (under the
    consumer's refresh lock); read by metrics from any thread: each value is
    one int or float, replaced whole.
    """

    def __init__(self) -> None:
        self.counts = dict.fromkeys(RESULTS, 0)
        self.seconds = dict.fromkeys(RESULTS, 0.0)
        self.last_load_seconds: float | None = None  # the start-up load, then each refresh that changed the version

    def record(self, result: str, seconds: float) -> None:
        self.counts[result] += 1
        self.seconds[result] += seconds
        if result == "changed":
            self.last_load_seconds = seconds


@dataclass(frozen=True)
class Metric:
    """One metric, labelled ``dataset`` and ``labels``. Counters are exposed with ``_total``.

    ``across_workers`` is how ``combe serve`` combines a gauge over its worker
    processes (prometheus_client's ``multiprocess_mode``); counters add up.
    """

    name: str
    kind: str  # "gauge" or "counter"
    help: str
    labels: tuple[str, ...] = ()
    across_workers: Literal["livemin", "livemax", "livemostrecent"] = "livemostrecent"


METRICS: tuple[Metric, ...] = (
    Metric("combe_dataset_version", "gauge", "Version served (combe serve: the lowest across workers)",
           across_workers="livemin"),
    Metric("combe_dataset_announced_version", "gauge", "Version announced in the store when last polled",
           across_workers="livemax"),
    Metric("combe_dataset_records", "gauge", "Records in the version served"),
    Metric("combe_dataset_staleness_seconds", "gauge", "Seconds since the announcement was last checked "
           "successfully (combe serve: the largest across workers)", across_workers="livemax"),
    Metric("combe_dataset_seconds_behind", "gauge", "Seconds since the announcement of the version to serve, while "
           "another one is served; 0 when serving it", across_workers="livemax"),
    Metric("combe_dataset_refreshes", "counter", "Refreshes that succeeded: changed (a new version served) or "
           "unchanged", ("result",)),
    Metric("combe_dataset_refresh_errors", "counter", "Refreshes that failed (combe serve: and failed initial loads)"),
    Metric("combe_dataset_refresh_seconds", "counter", "Seconds spent refreshing, by result: changed, unchanged, "
           "failed", ("result",)),
    Metric("combe_dataset_last_load_seconds", "gauge", "Seconds the last load of a new version took (at start-up, "
           "then each refresh that changed the version)"),
    Metric("combe_dataset_memory_bytes", "gauge", "Bytes of the version served, by part: the snapshot's columns and "
           "key index (with a cache dir, pages of a file mapped and shared between processes) and the secondary "
           "indexes built", ("part",)),
    Metric("combe_dataset_overlay_records", "gauge", "Records changed since the snapshot, held as Python dicts on "
           "top of it"),
)

Sample = tuple[str, tuple[str, ...], float]  # metric name, values of its own labels (not dataset), value


def _views(view: AnyView) -> list[View]:
    """The Views a consumer serves from: its View, or each held shard's."""
    return list(view.views.values()) if isinstance(view, ShardedView) else [view]


def memory(view: AnyView) -> dict[str, int]:
    """Bytes a View (every held shard's, summed) holds in Arrow and numpy buffers, by part."""
    total = {"columns": 0, "key_index": 0, "indexes": 0}
    for part in _views(view):
        base = part.base
        # A copy of the values: another thread may be adding an index (under base.index_lock) meanwhile.
        indexes = list(base.indexes.values())
        total["columns"] += int(base.table.nbytes)
        total["key_index"] += int(base.index_rows.nbytes + base.index_ends.nbytes)
        total["indexes"] += sum(index.nbytes for index in indexes)
    return total


def samples(consumer: Consumer, now: float | None = None) -> list[Sample]:
    """Every metric of one consumer, as it is now."""
    now = time.time() if now is None else now
    status = consumer.status()
    stats = consumer.refresh_stats
    view = consumer.view()
    found: list[Sample] = [
        ("combe_dataset_version", (), status["version"]),
        ("combe_dataset_announced_version", (), status["announced"] or status["version"]),
        ("combe_dataset_records", (), status["records"]),
        ("combe_dataset_seconds_behind", (), status["seconds_behind"]),
        ("combe_dataset_refresh_errors", (), stats.counts["failed"]),
        ("combe_dataset_overlay_records", (), sum(len(part.overlay) for part in _views(view))),
    ]
    if status["last_refresh"]:
        found.append(("combe_dataset_staleness_seconds", (), max(0.0, now - status["last_refresh"])))
    found += [("combe_dataset_refreshes", (result,), stats.counts[result]) for result in RESULTS[:2]]
    found += [("combe_dataset_refresh_seconds", (result,), stats.seconds[result]) for result in RESULTS]
    if stats.last_load_seconds is not None:
        found.append(("combe_dataset_last_load_seconds", (), stats.last_load_seconds))
    found += [("combe_dataset_memory_bytes", (part,), nbytes) for part, nbytes in memory(view).items()]
    return found


class ConsumerMetrics:
    """The collector ``register_metrics`` adds: its consumers' metrics, read from them at each scrape.

    One per registry: it holds every consumer registered there (``add``,
    ``remove``), since a registry takes each metric name from one collector.
    """

    def __init__(self, consumers: Iterable[Consumer] = ()) -> None:
        self._consumers: list[Consumer] = []
        self._lock = threading.Lock()  # add/remove against a scrape on another thread
        for consumer in consumers:
            self.add(consumer)

    def add(self, consumer: Consumer) -> None:
        with self._lock:
            if any(c.name == consumer.name for c in self._consumers):
                raise ConfigError(f"a consumer of dataset {consumer.name!r} is already in these metrics; their "
                                  "series are labelled by dataset, so each dataset can be registered once")
            self._consumers = [*self._consumers, consumer]

    def remove(self, consumer: Consumer) -> None:
        with self._lock:
            self._consumers = [c for c in self._consumers if c is not consumer]

    def describe(self) -> Iterator[Any]:
        """The metric families with no samples, so that a registry refuses a second collector of the same names."""
        return self._families([])

    def collect(self) -> Iterator[Any]:
        return self._families(self._consumers)  # the list is replaced, never changed: a scrape reads one list

    def _families(self, consumers: list[Consumer]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        now = time.time()
        families = {metric.name: (GaugeMetricFamily if metric.kind == "gauge" else CounterMetricFamily)(
            metric.name, metric.help, labels=["dataset", *metric.labels]) for metric in METRICS}
        for consumer in consumers:
            for name, labels, value in samples(consumer, now):
                families[name].add_metric([consumer.name, *labels], value)
        return iter(families.values())


def register_metrics(*consumers: Consumer, registry: Any = None) -> ConsumerMetrics:
    """Register the metrics of ``consumers`` in ``registry`` (default: prometheus_client's global REGISTRY).

    Returns the collector; ``add(consumer)`` puts a dataset opened later in
    the same registry. Needs prometheus_client (``pip install 'combe[metrics]'``).
    """
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigError("consumer metrics need prometheus_client, which is not installed; install it with: "
                          "pip install 'combe[metrics]'") from exc
    collector = ConsumerMetrics(consumers)
    target = prometheus_client.REGISTRY if registry is None else registry
    try:
        target.register(collector)
    except ValueError as exc:  # prometheus_client: a metric name registered already
        raise ConfigError(f"combe's consumer metrics are already registered in this registry ({exc}); add the "
                          "consumer to the ConsumerMetrics that register_metrics returned then: "
                          "metrics.add(consumer)") from exc
    return collector
