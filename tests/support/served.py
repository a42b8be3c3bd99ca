"""Small datasets for the HTTP endpoint's tests, published with the real producer from JSONL files, and
``combe serve`` started on them as a real process.

``movies`` (string keys) has three versions with additions, updates and
removals; ``counts`` (int64 keys) has one. ``Published.expected`` holds what
each version must serve, replayed independently from the changes.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from combe.format.dataset import Dataset
from combe.producer import PublishOptions, Publisher, RecordFormat, open_source

from .changelog import Change, append_jsonl
from .written import Written, schema_of

GENRES = ("drama", "comedy", "sci-fi")


def movie(i: int, **changes: Any) -> dict[str, Any]:
    value = {"title": f"Movie {i}", "year": 1990 + i % 10, "genre": GENRES[i % 3], "rating": 5.0 + i % 5 / 2,
             "tags": ["classic", str(i)]}
    value.update(changes)
    return value


# version -> the changes that make it from the previous one
MOVIES: dict[int, list[Change]] = {
    1: [(f"m{i}", movie(i)) for i in range(30)],
    2: [("m1", None), ("m2", movie(2, title="Movie 2 (restored)")), ("m100", movie(100, title="A new one"))],
    3: [("m3", movie(3, year=2001)), ("m101", movie(101)), ("m5", None)],
}
COUNTS: dict[int, list[Change]] = {1: [(n, {"n": n, "square": n * n}) for n in range(-3, 7)]}
# version -> the tags it is published with
MOVIE_TAGS: dict[int, dict[str, str]] = {3: {"commit": "4f2a9c1", "data.date": "2026-11-27"}}


@dataclass
class Published:
    store: Path
    sources: Path
    expected: dict[str, dict[int, dict[Any, dict[str, Any]]]] = field(default_factory=dict)

    def publish(self, dataset: str, changes: list[Change], key_type: str = "string",
                tags: dict[str, str] | None = None) -> int:
        """Publish one version of ``dataset`` from ``changes``; returns the version number."""
        source = self.sources / f"{dataset}.jsonl"
        append_jsonl(source, changes)
        publisher = Publisher(Dataset.open(str(self.store), dataset), open_source(str(source)),
                              PublishOptions(fmt=RecordFormat(key_type=key_type), tags=tags or {}))
        result = publisher.run_cycle()
        assert result.version is not None
        history = self.expected.setdefault(dataset, {})
        state = dict(history.get(result.version - 1, {}))
        for key, value in changes:
            if value is None:
                state.pop(key, None)
            else:
                state[key] = {"key": key, **value}
        history[result.version] = state
        return result.version

    def latest(self, dataset: str) -> dict[Any, dict[str, Any]]:
        history = self.expected[dataset]
        return history[max(history)]


def publish_all(root: Path) -> Published:
    """Both datasets, every version, in a local store under ``root``."""
    sources = root / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    published = Published(root / "store", sources)
    for version, changes in MOVIES.items():
        published.publish("movies", changes, tags=MOVIE_TAGS.get(version))
    published.publish("counts", COUNTS[1], key_type="int64")
    return published


# ``nested`` (written with the format layer): nested columns, a struct that gains a field at version 2.
NESTED_V1 = schema_of(tags="list<string>", who="struct<id:int64,name:string>", ids="map<int64,list<float64>>",
                      raw="list<binary>", doc="json")
NESTED_V2 = schema_of(tags="list<string>", who="struct<id:int64,name:string,age:int64>",
                      ids="map<int64,list<float64>>", raw="list<binary>", doc="json")
ANN = {"tags": ["a", None], "who": {"id": 1, "name": "Ann"}, "ids": {7: [1.5, None], -2: []}, "raw": [b"\x00\xff"],
       "doc": '{"x":[1,{"y":null}]}'}
# As JSON: map keys as text, binary as base64, json columns as values, every struct field present.
ANN_JSON = {"key": "a", "tags": ["a", None], "who": {"id": 1, "name": "Ann", "age": None},
            "ids": {"7": [1.5, None], "-2": []}, "raw": ["AP8="], "doc": {"x": [1, {"y": None}]}}


def publish_nested(store: str) -> None:
    written = Written(store, "nested")
    written.publish({"a": ANN, "b": {"tags": []}}, NESTED_V1)
    written.publish({"b": {"who": {"id": 2, "name": None, "age": 40}}, "c": {"ids": {}}}, NESTED_V2)


# -- combe serve as a process ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str, headers: dict[str, str] | None = None, data: bytes | None = None,
          context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one request; an error status is returned, not raised."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def start_serve(published: Published, *extra: str, env: dict[str, str] | None = None,
                datasets: tuple[str, ...] = ("movies", "counts"), context: ssl.SSLContext | None = None,
                ready: str = "/readyz", headers: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``combe serve`` on ``published``, once ``ready`` answers 200; the process and the base URL.

    With ``context`` the server is expected to speak TLS (pass --certfile and --keyfile in ``extra``).
    """
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}, **(env or {})}
    names = [arg for name in datasets for arg in ("--dataset", name)]
    process = subprocess.Popen(
        [sys.executable, "-m", "combe", "serve", "--store", str(published.store), *names, "--port", str(port),
         *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"{'https' if context else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, process.communicate()[1].decode()
        try:
            if fetch(base + ready, headers, context=context)[0] == 200:
                return process, base
        except OSError:
            pass
        assert time.monotonic() < deadline, "combe serve did not become ready"
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    """SIGTERM (once) and wait; the exit code and what it wrote (stdout, where the access log goes, then stderr)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    return process.returncode, (out + err).decode()
