"""A small read service over a combe dataset, the way a team would embed the consumer.

    pip install 'combe[metrics]'
    python examples/read_service/read_service.py --store ./store --dataset movies --port 8000
    curl localhost:8000/movies/tt0034583        # the record as JSON, 404 if absent
    curl localhost:8000/metrics                 # the consumer's metrics, in the service's own registry

The service keeps one Consumer (refreshed in the background) and registers
its metrics with one call in the service's own prometheus_client registry,
beside a metric of its own. test_read_service.py tests it on a
combe.testing.TestDataset, with the real Consumer and no store to set up.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from combe import Consumer, register_metrics

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class MovieService:
    """GET /movies/<key>: the record, with the version that answered; GET /metrics: Prometheus text."""

    def __init__(self, movies: Consumer, registry: CollectorRegistry) -> None:
        self.movies = movies
        self.registry = registry
        register_metrics(movies, registry=registry)  # version, staleness, refreshes, memory: one call
        self.lookups = Counter("movie_lookups", "Movie lookups, by outcome", ["outcome"], registry=registry)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._answer(start_response, "200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if path.startswith("/movies/") and environ.get("REQUEST_METHOD") == "GET":
            with self.movies.view() as view:  # one version for the record and the header
                record = view.get(path.removeprefix("/movies/"))
                version = view.version
            self.lookups.labels("found" if record else "missing").inc()
            body = json.dumps({"version": version, "movie": record}).encode()
            return self._answer(start_response, "200 OK" if record else "404 Not Found", body, "application/json")
        return self._answer(start_response, "404 Not Found", b'{"error": "no such route"}', "application/json")

    @staticmethod
    def _answer(start_response: StartResponse, status: str, body: bytes, content_type: str) -> list[bytes]:
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--dataset", default="movies")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with Consumer(args.store, args.dataset, refresh_interval=10) as movies:
        with make_server("127.0.0.1", args.port, MovieService(movies, CollectorRegistry())) as server:
            server.serve_forever()


if __name__ == "__main__":
    main()
