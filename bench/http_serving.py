"""The lookup HTTP endpoint against a minimal flask app serving a dict: single-key GETs, idle and during refreshes.

    python bench/http_serving.py [--records 50000] [--runs 5] [--requests 3000] [--seconds 15] [--workers 2]
                         [--concurrency 4] [--out PATH]

Both servers run at once under gunicorn with the same settings (combe's
embedded runner and worker, --workers each): ``combe serve`` over a store,
and a flask app holding the changelog replayed into a dict (what a read
service does without combe). Load comes from a separate process on
127.0.0.1: --concurrency threads, one connection per request, random keys
that exist, at most --requests requests or --seconds seconds per
measurement. It reports requests per second and p50/p99 latency.

Each run measures both servers idle, then both while a producer in this
process appends 1% changes to the changelog and publishes a version every
--change-interval seconds: combe's workers refresh by deltas, the dict app's
workers apply the changelog's new lines (as a Kafka-fed dict would consume
new messages). The producer runs during both servers' measurements, so each
side shares the machine with the same publishing work. The order of the two
servers alternates from run to run; ratios are taken run by run.

``measure(Setup(...))`` returns the figures as bench.stats.Figure objects,
for bench/run.py.

    python bench/http_serving.py pages [--records 30000] [--runs 5] [--requests 200]

measures what one page of a query costs against a point lookup, over HTTP,
one keep-alive connection, requests one after the other: ``key.gte=&limit=1``
(every record matches), ``limit=100``, a range on another field and an
equality matching 1/24 of the records, first on a fresh snapshot, then on a
View holding three deltas. Each figure is the median latency of a query over
the median latency of ``GET .../records/<key>`` in the same run.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: import the benchmark modules as the package `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import http.client  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench import data  # noqa: E402
from bench.stats import Figure, percentile, ratio  # noqa: E402
from tests.support.service import terminate  # noqa: E402

log = logging.getLogger("bench.http_serving")

DATASET = "products"
SYSTEMS = ("dict", "combe")
PHASES = ("idle", "refresh")
ROUTE = f"/v1/datasets/{DATASET}/records/"


@dataclass(frozen=True)
class Setup:
    records: int = 50_000
    runs: int = 5
    requests: int = 3_000  # per measurement, at most
    seconds: float = 15.0  # per measurement, at most
    workers: int = 2
    concurrency: int = 4
    change_interval: float = 0.5  # seconds between published versions in the refresh phase
    refresh_interval: float = 0.2  # how often both servers look for new data


# -- the data -------------------------------------------------------------------------


class Changes:
    """A changelog file and a store, kept equal; ``step()`` adds 1% changes and publishes a version.

    Changes touch only the first tenth of the keys (updates) and new keys
    (additions), so the keys the load asks for always exist.
    """

    def __init__(self, root: Path, records: int) -> None:
        from combe.format.dataset import Dataset
        from combe.producer import Publisher, open_source

        self.records = records
        self.changelog = root / f"{DATASET}.jsonl"
        self.store = str(root / "store")
        data.write_jsonl(self.changelog, data.records(records, "string"))
        self.publisher = Publisher(Dataset.open(self.store, DATASET), open_source(str(self.changelog)))
        self.publisher.run_cycle()
        self.steps = 0

    def stable_keys(self, count: int, seed: int = 3) -> list[str]:
        indexes = np.random.default_rng(seed).integers(self.records // 10, self.records, size=count)
        return [str(data.key_of(i, "string")) for i in indexes.tolist()]

    def step(self) -> None:
        self.steps += 1
        size = max(10, self.records // 100)
        updated = np.random.default_rng(self.steps).choice(self.records // 10, size=size - size // 10, replace=False)
        added = np.arange(size // 10) + self.records + self.steps * size
        indexes = np.concatenate([updated, added])
        rows = data.rows(indexes, 1000 + self.steps)
        data.write_jsonl(self.changelog, [(data.key_of(i, "string"), row) for i, row in zip(indexes.tolist(), rows)],
                         append=True)
        self.publisher.run_cycle()


@contextmanager
def publishing(changes: Changes, interval: float) -> Iterator[None]:
    """Publish a version every ``interval`` seconds in a thread, while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            changes.step()

    thread = threading.Thread(target=loop, name="bench-http-producer", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# -- the servers ----------------------------------------------------------------------


def dict_app(changelog: Path, refresh_interval: float) -> Any:
    """The baseline: the changelog replayed into a dict, new lines applied as they arrive."""
    from flask import Flask, jsonify

    state: dict[str, Any] = {}
    position = 0

    def catch_up() -> None:
        nonlocal position
        with open(changelog, "rb") as handle:
            handle.seek(position)
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # a line still being written
                position += len(line)
                change = json.loads(line)
                if change["value"] is None:
                    state.pop(change["key"], None)
                else:
                    state[change["key"]] = change["value"]

    def follow() -> None:
        while True:
            time.sleep(refresh_interval)
            catch_up()

    catch_up()
    threading.Thread(target=follow, name="dict-follower", daemon=True).start()
    app = Flask("dict_app")

    @app.get(ROUTE + "<path:key>")
    def get(key: str) -> Any:
        value = state.get(key)
        if value is None:
            return jsonify({"error": "not found"}), 404
        return jsonify({"key": key, "record": {"key": key, **value}})

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, key: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", ROUTE + key)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@contextmanager
def server(command: list[str], port: int, probe: str, root: Path) -> Iterator[None]:
    """A server process (gunicorn and its workers), ready when ``probe`` answers 200; SIGTERM afterwards."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    errors = open(root / f"server-{port}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {(root / f'server-{port}.log').read_text()[-2000:]}")
            try:
                if _get(port, probe) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server on port {port} did not answer in time")
            time.sleep(0.1)
        yield
    finally:
        terminate(process)
        errors.close()


def serve_dict(argv: list[str]) -> int:
    """``bench/http_serving.py baseline``: the dict app under the same gunicorn runner as combe serve."""
    from combe.consumer.server.runner import Listen, scratch_directory, serve_gunicorn

    parser = argparse.ArgumentParser(prog="bench/http_serving.py baseline")
    parser.add_argument("--changelog", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--refresh-interval", type=float, required=True)
    args = parser.parse_args(argv)
    with scratch_directory("bench-http-") as scratch:
        serve_gunicorn(lambda: dict_app(args.changelog, args.refresh_interval),
                       Listen("127.0.0.1", args.port, args.workers), scratch / "metrics", ready_wait=0)
    return 0


# -- the load -------------------------------------------------------------------------


@dataclass
class Load:
    seconds: float
    latencies: list[float]
    failures: int

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds


def generate(port: int, keys: list[str], requests: int, seconds: float, concurrency: int) -> Load:
    """GET random keys from ``concurrency`` threads until ``requests`` are done or ``seconds`` pass."""
    issued = itertools.count()
    latencies: list[float] = []
    failures = [0]
    deadline = time.perf_counter() + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        mine = []
        while next(issued) < requests and time.perf_counter() < deadline:
            key = keys[rng.randrange(len(keys))]
            started = time.perf_counter()
            try:
                ok = _get(port, key) == 200
            except OSError:
                ok = False
            if ok:
                mine.append(time.perf_counter() - started)
            else:
                failures[0] += 1
        latencies.extend(mine)  # list.extend is atomic under the GIL

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Load(time.perf_counter() - started, latencies, failures[0])


def run_load(port: int, keys_file: Path, setup: Setup) -> Load:
    """``generate`` in a separate process, so the load does not share this process's interpreter."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "load", "--port", str(port), "--keys", str(keys_file),
         "--requests", str(setup.requests), "--seconds", str(setup.seconds), "--concurrency", str(setup.concurrency)],
        capture_output=True, text=True, check=True, timeout=setup.seconds + 60)
    document = json.loads(result.stdout)
    return Load(document["seconds"], document["latencies"], document["failures"])


def load_main(argv: list[str]) -> int:
    """``bench/http_serving.py load``: the load generator process; prints its result as JSON."""
    parser = argparse.ArgumentParser(prog="bench/http_serving.py load")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keys", type=Path, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args(argv)
    load = generate(args.port, json.loads(args.keys.read_text()), args.requests, args.seconds, args.concurrency)
    json.dump({"seconds": load.seconds, "latencies": load.latencies, "failures": load.failures}, sys.stdout)
    return 0


# -- what a page of a query costs -------------------------------------------------------

PAGE_QUERIES = {
    "key_gte_limit_1": "key.gte=&limit=1",
    "key_gte_limit_100": "key.gte=&limit=100",
    "price_gte_limit_1": "price.gte=0&limit=1",
    "category_eq_limit_1": "category=category-03&limit=1",
}


def _latencies(connection: http.client.HTTPConnection, paths: list[str]) -> list[float]:
    out = []
    for path in paths:
        started = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        out.append(time.perf_counter() - started)
    return out


def measure_pages(records: int = 30_000, runs: int = 5, requests: int = 200, root: Path | None = None) -> list[Figure]:
    """Query pages against point lookups on one ``combe serve``; ratios of medians, run by run."""
    directory = Path(tempfile.mkdtemp(prefix="combe-bench-pages-", dir=root))
    ratios: dict[str, list[float]] = {f"{name}_{phase}": []
                                      for name in PAGE_QUERIES for phase in ("snapshot", "deltas")}
    point_ms: dict[str, list[float]] = {"snapshot": [], "deltas": []}
    try:
        changes = Changes(directory, records)
        keys = changes.stable_keys(requests)
        port = free_port()
        command = [sys.executable, "-m", "combe", "serve", "--store", changes.store, "--dataset", DATASET,
                   "--port", str(port), "--workers", "1", "--refresh-interval", "0.2", "--index", "price",
                   "--index", "category"]
        with server(command, port, keys[0], directory):
            for phase in ("snapshot", "deltas"):
                if phase == "deltas":
                    for _ in range(3):
                        changes.step()
                    _wait_for_version(port, changes.steps + 1)
                # A new connection: the server closes one left idle (while publishing) after a few seconds.
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                for _ in range(runs):
                    point = statistics.median(_latencies(connection, [ROUTE + key for key in keys]))
                    point_ms[phase].append(point * 1000)
                    for name, query in PAGE_QUERIES.items():
                        page = statistics.median(_latencies(connection, [f"/v1/datasets/{DATASET}/query?{query}"]
                                                            * requests))
                        ratios[f"{name}_{phase}"].append(page / point)
                connection.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    figures = [Figure(f"http_point_lookup_ms_{phase}", "ms", values) for phase, values in point_ms.items()]
    figures += [Figure(f"http_query_{name}_over_point_lookup", "x", values, extra={"records": records})
                for name, values in ratios.items()]
    return figures


def _wait_for_version(port: int, version: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", f"/v1/datasets/{DATASET}")
        served = json.loads(connection.getresponse().read())["version"]
        connection.close()
        if served >= version:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not reach version {version}")
        time.sleep(0.1)


def pages_main(argv: list[str]) -> int:
    """``bench/http_serving.py pages``: print what a page of a query costs against a point lookup."""
    parser = argparse.ArgumentParser(prog="bench/http_serving.py pages")
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("combe").setLevel(logging.WARNING)
    _print(measure_pages(args.records, args.runs, args.requests), args.out)
    return 0


def _print(figures: list[Figure], out: Path | None) -> None:
    width = max(len(f.name) for f in figures)
    print(f"{'figure':<{width}}  {'median':>10} {'min':>10} {'max':>10}  unit")
    for f in figures:
        print(f"{f.name:<{width}}  {f.median:>10.3f} {f.min:>10.3f} {f.max:>10.3f}  {f.unit}")
    if out:
        out.write_text(json.dumps({f.name: f.to_json() for f in figures}, indent=2) + "\n")


# -- the measurement ------------------------------------------------------------------


def measure(setup: Setup = Setup(), root: Path | None = None) -> list[Figure]:
    """Both servers, idle and during refreshes, ``setup.runs`` times; figures with ratios combe / dict."""
    directory = Path(tempfile.mkdtemp(prefix="combe-bench-http-", dir=root))
    results: dict[tuple[str, str], list[Load]] = {(s, p): [] for s in SYSTEMS for p in PHASES}
    try:
        log.info("publishing %d records", setup.records)
        changes = Changes(directory, setup.records)
        keys = changes.stable_keys(10_000)
        keys_file = directory / "keys.json"
        keys_file.write_text(json.dumps(keys))
        ports = {"combe": free_port(), "dict": free_port()}
        commands = {
            "combe": [sys.executable, "-m", "combe", "serve", "--store", changes.store, "--dataset", DATASET,
                      "--port", str(ports["combe"]), "--workers", str(setup.workers),
                      "--refresh-interval", str(setup.refresh_interval), "--cache-dir", str(directory / "cache")],
            "dict": [sys.executable, str(Path(__file__).resolve()), "baseline", "--changelog", str(changes.changelog),
                     "--port", str(ports["dict"]), "--workers", str(setup.workers),
                     "--refresh-interval", str(setup.refresh_interval)],
        }
        with ExitStack() as stack:
            for system in SYSTEMS:
                stack.enter_context(server(commands[system], ports[system], keys[0], directory))
            for run in range(setup.runs):
                order = SYSTEMS if run % 2 == 0 else SYSTEMS[::-1]
                for system in order:
                    results[system, "idle"].append(run_load(ports[system], keys_file, setup))
                with publishing(changes, setup.change_interval):
                    for system in order:
                        results[system, "refresh"].append(run_load(ports[system], keys_file, setup))
                log.info("run %d/%d: %s", run + 1, setup.runs, ", ".join(
                    f"{s} {p} {results[s, p][-1].rps:.0f} req/s" for p in PHASES for s in SYSTEMS))
        return _figures(results, changes.steps)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _figures(results: dict[tuple[str, str], list[Load]], versions: int) -> list[Figure]:
    figures: dict[str, Figure] = {}
    for (system, phase), loads in results.items():
        failures = sum(load.failures for load in loads)
        extra = {"requests": [len(load.latencies) for load in loads], "failures": failures}
        figures[f"rps_{system}_{phase}"] = Figure(f"http_get_rps_{system}_{phase}", "req/s",
                                                  [load.rps for load in loads], extra=extra)
        for q in (50, 99):
            figures[f"p{q}_{system}_{phase}"] = Figure(
                f"http_get_p{q}_ms_{system}_{phase}", "ms",
                [percentile(load.latencies, q / 100) * 1000 for load in loads])
    out = list(figures.values())
    for phase in PHASES:
        out.append(ratio(f"http_get_rps_ratio_combe_over_dict_{phase}", figures[f"rps_combe_{phase}"],
                         figures[f"rps_dict_{phase}"]))
        out.append(ratio(f"http_get_p99_ratio_combe_over_dict_{phase}", figures[f"p99_combe_{phase}"],
                         figures[f"p99_dict_{phase}"]))
    out[-1].extra["versions_published"] = versions
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["baseline"]:
        return serve_dict(argv[1:])
    if argv[:1] == ["load"]:
        return load_main(argv[1:])
    if argv[:1] == ["pages"]:
        return pages_main(argv[1:])
    defaults = Setup()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"default: {value}")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("combe").setLevel(logging.WARNING)
    setup = Setup(**{name: getattr(args, name) for name in vars(defaults)})
    _print(measure(setup), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
