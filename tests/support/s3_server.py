"""A real S3 endpoint for integration tests: moto's server in a separate process on 127.0.0.1.

Clients talk to it over real HTTP with botocore, so request signing, conditional headers,
304/412 answers and connection handling are exercised as against AWS.

The server handles ONE request at a time. moto (checked in 5.2.1 and 5.2.5) evaluates
``If-Match`` / ``If-None-Match`` on PutObject and then writes, without a lock, and its stock
server (``python -m moto.server``) is multi-threaded: two racing conditional PUTs can then both
succeed, which AWS never allows. Serving requests one by one makes moto's check-and-write atomic,
as S3's is, while clients still race each other between requests.

Run it by hand with ``python tests/support/s3_server.py`` (prints the port).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn


if __name__ == "__main__":  # run as the server process: import the test support from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.service import Service, terminate  # noqa: E402

HOST = "127.0.0.1"
REGION = "us-east-1"
BUCKET = "combe-tests"  # the bucket the shared fixtures create; tests use a fresh prefix in it
# moto accepts any credentials; fixed dummies keep clients from looking for real ones.
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


class S3ServerError(RuntimeError):
    """The moto server did not start or answer."""


class S3Server(Service):
    """moto's S3 in a child process; use as a context manager or call start() and stop(). attach() gives
    another process a server that one started (tests/support/shared.py)."""

    def __init__(self, startup_timeout: float = 30.0) -> None:
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: str | None = None

    @classmethod
    def attach(cls, handle: dict[str, Any]) -> S3Server:
        """The server another process started and described with handle()."""
        server = cls()
        server.port = handle["port"]
        return server

    def handle(self) -> dict[str, Any]:
        if self._process is None or self.port is None or self._log_path is None:
            raise S3ServerError("the S3 server is not running; call start() first")
        return {"pid": self._process.pid, "port": self.port, "files": [self._log_path]}

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise S3ServerError("the S3 server is not running; call start() first")
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        """Launch the server, read the port it bound (no free-port race), wait until it answers."""
        # No stdin: the server may outlive the process that starts it (an xdist worker, whose stdin is its
        # channel to pytest's main process).
        with tempfile.NamedTemporaryFile(prefix="moto-s3-", suffix=".log", delete=False) as log:
            self._log_path = log.name
            self._process = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], self.startup_timeout)
        line = self._process.stdout.readline() if ready else b""
        self._process.stdout.close()
        if not line.strip().isdigit():
            self._fail("did not start")
        self.port = int(line)
        self._wait_answering()

    def stop(self) -> None:
        """Terminate the server and wait for it; safe to call twice."""
        terminate(self._process, timeout=10)
        self._process = None
        self.port = None
        if self._log_path is not None:
            os.unlink(self._log_path)
            self._log_path = None


    def env(self) -> dict[str, str]:
        """Environment for clients configured the standard AWS way (what a user would set)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def storage_options(self, endpoint_url: str | None = None) -> dict[str, object]:
        """s3fs storage options reaching this server, or ``endpoint_url`` (a proxy in front of it)."""
        return {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "endpoint_url": endpoint_url or self.endpoint_url,
            "client_kwargs": {"region_name": REGION},
        }

    def make_bucket(self, name: str) -> None:
        """Create the bucket unless it exists already."""
        # boto3 imported here, not with the module: tests import this module for its types and names in every
        # worker, where make check runs no S3 test (a quarter of a second each).
        import boto3
        from botocore.exceptions import ClientError

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        try:
            client.create_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise
        finally:
            client.close()

    def _wait_answering(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2).close()
                return
            except urllib.error.HTTPError:
                return  # any HTTP answer means it is serving
            except OSError as exc:
                if time.monotonic() > deadline or self._process is None or self._process.poll() is not None:
                    self._fail(f"does not answer ({exc})")
                time.sleep(0.1)

    def _fail(self, what: str) -> NoReturn:
        """Stop the server and raise with the end of its log, which says why."""
        assert self._log_path is not None
        with open(self._log_path, errors="replace") as log:
            tail = "".join(log.readlines()[-40:])
        self.stop()
        raise S3ServerError(f"moto's S3 server {what}:\n{tail}")


def _serve() -> None:
    """Child process: bind a free port, announce it on stdout, serve one request at a time."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    server = make_server(HOST, 0, DomainDispatcherApplication(create_backend_app), threaded=False)
    print(server.server_port, flush=True)
    # The parent stops reading stdout after the port; anything moto prints goes to the log.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    server.serve_forever()


if __name__ == "__main__":
    _serve()
