"""A router in front of combe servers that each hold some shards of a dataset (``combe serve --shards``).

    combe serve --store ./store --dataset users --shards 0-1 --port 8001 &
    combe serve --store ./store --dataset users --shards 2-3 --port 8002 &
    python examples/shard_router/router.py --dataset users --port 8000 \\
        --upstream 0-1=http://127.0.0.1:8001 --upstream 2-3=http://127.0.0.1:8002
    curl localhost:8000/v1/datasets/users/records/u-1
    curl -d '{"keys": ["u-1", "u-2"]}' localhost:8000/v1/datasets/users/records:batchGet

A key goes to the server holding its shard, found with combe's partitioner
(the shard Kafka's default partitioner picks, ``combe.format.partition``),
so no lookup table is kept. A batch is split by server and merged back in
the order of its keys; when the servers answered from different versions,
the ones behind are asked again with ``X-Combe-Min-Version`` (they refresh
first), so the merged answer comes from one dataset version. A key of a
shard no upstream holds is answered 502. The router learns the shard count
and key type from the first server that describes the dataset. Standard
library only, besides combe: test_router.py runs it against real servers.
"""

from __future__ import annotations

import argparse
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

from combe.format.errors import KeyTypeError
from combe.format.keys import lookup_key
from combe.format.partition import partition_of

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Answer = tuple[int, dict[str, str], bytes]
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 421: "Misdirected Request", 502: "Bad Gateway"}


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
    """Status, headers and body of one request to an upstream; an error status is an answer too."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Router:
    """WSGI app: GET .../records/<key> and POST .../records:batchGet of one dataset, routed by shard."""

    def __init__(self, dataset: str, upstreams: dict[int, str]) -> None:
        self.dataset = dataset
        self.upstreams = upstreams  # shard -> base URL of the server holding it
        self.prefix = f"/v1/datasets/{dataset}/records"
        self._shape: tuple[int, str] | None = None  # (shard count, key type), learnt once
        self._lock = threading.Lock()

    def shape(self) -> tuple[int, str]:
        """The dataset's shard count and key type, from the first server that describes it."""
        with self._lock:
            for base in dict.fromkeys(self.upstreams.values()):
                if self._shape is None:
                    status, _, body = fetch(f"{base}/v1/datasets/{self.dataset}")
                    described = json.loads(body) if status == 200 else {}
                    if described.get("shards"):
                        self._shape = described["shards"]["count"], described["key"]["type"]
            if self._shape is None:
                raise ConnectionError(f"no upstream describes {self.dataset} as a sharded dataset yet")
            return self._shape

    def server_of(self, key: str | int) -> str | None:
        count, key_type = self.shape()
        return self.upstreams.get(partition_of(key, key_type, count))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD")
        try:
            if method == "GET" and path.startswith(self.prefix + "/"):
                answer = self.get(path[len(self.prefix) + 1:], environ.get("HTTP_X_COMBE_MIN_VERSION"))
            elif method == "POST" and path == self.prefix + ":batchGet":
                size = int(environ.get("CONTENT_LENGTH") or 0)
                answer = self.batch_get(environ["wsgi.input"].read(size))
            else:
                answer = _error(404, f"this router answers {self.prefix}/<key> and {self.prefix}:batchGet")
        except (KeyTypeError, ValueError) as exc:
            answer = _error(400, str(exc))
        except (ConnectionError, OSError) as exc:
            answer = _error(502, f"an upstream server could not be reached: {exc}")
        status, headers, body = answer
        start_response(f"{status} {REASONS.get(status, 'Error')}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                        *((name, headers[name]) for name in ("X-Combe-Version",) if name in headers)])
        return [body]

    def get(self, raw: str, min_version: str | None) -> Answer:
        key = lookup_key(raw, self.shape()[1])
        base = self.server_of(key)
        if base is None:
            return _error(502, f"no upstream holds the shard of key {raw!r}")
        headers = {"X-Combe-Min-Version": min_version} if min_version else {}
        return fetch(f"{base}{self.prefix}/{urllib.parse.quote(str(key), safe='')}", headers=headers)

    def batch_get(self, body: bytes) -> Answer:
        document = json.loads(body)
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError('the request body must be a JSON object {"keys": [...]}')
        key_type = self.shape()[1]
        keys = [lookup_key(k, key_type, f"keys[{i}]") for i, k in enumerate(document["keys"])]
        groups: dict[str, list[int]] = {}  # server -> positions of its keys in the batch
        for i, key in enumerate(keys):
            base = self.server_of(key)
            if base is None:
                return _error(502, f"no upstream holds the shard of keys[{i}]")
            groups.setdefault(base, []).append(i)
        answers = {base: self._batch(base, [keys[i] for i in at]) for base, at in groups.items()}
        for answer in answers.values():
            if answer[0] != 200:
                return answer
        newest = max((int(a[1]["X-Combe-Version"]) for a in answers.values()), default=0)
        for base, answer in answers.items():  # one version for the whole batch: the behind ones catch up
            if int(answer[1]["X-Combe-Version"]) < newest:
                answers[base] = again = self._batch(base, [keys[i] for i in groups[base]], newest)
                if again[0] != 200:
                    return again
        records: list[Any] = [None] * len(keys)
        for base, at in groups.items():
            for i, record in zip(at, json.loads(answers[base][2])["records"]):
                records[i] = record
        merged = json.dumps({"dataset": self.dataset, "version": newest or None, "records": records}).encode()
        return 200, {"X-Combe-Version": str(newest)} if newest else {}, merged

    def _batch(self, base: str, keys: list[Any], min_version: int | None = None) -> Answer:
        headers = {"X-Combe-Min-Version": str(min_version)} if min_version else {}
        return fetch(f"{base}{self.prefix}:batchGet", json.dumps({"keys": keys}).encode(), headers)


def _error(status: int, message: str) -> Answer:
    body = {"error": {"status": status, "type": "RouterError", "message": message}}
    return status, {}, json.dumps(body).encode()


def parse_upstreams(values: list[str]) -> dict[int, str]:
    """``0-1=http://host:port`` arguments as shard -> base URL."""
    upstreams: dict[int, str] = {}
    for value in values:
        shards, _, url = value.partition("=")
        lo, _, hi = shards.partition("-")
        for shard in range(int(lo), int(hi or lo) + 1):
            upstreams[shard] = url.rstrip("/")
    return upstreams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--upstream", action="append", required=True, metavar="SHARDS=URL")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with make_server("127.0.0.1", args.port, Router(args.dataset, parse_upstreams(args.upstream))) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
