"""Running the app: gunicorn embedded (one command, N worker processes) or flask's development server.

gunicorn's workers are forked processes, each with its own consumers: they
share one blob cache directory, so a blob is downloaded once per host and
its decompressed Arrow file is memory-mapped by every worker (one copy in
the page cache). Apps are built in each worker after the fork, because the
consumers' refresh threads do not survive a fork.

prometheus_client picks its multi-process mode when it is first imported,
from PROMETHEUS_MULTIPROC_DIR, so ``serve_gunicorn`` sets that before
anything imports the app (which is why this module never imports it).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from combe.format.errors import ConfigError

log = logging.getLogger(__name__)

AppFactory = Callable[[], Any]  # returns a flask app; built lazily so that no worker imports it before the fork


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    threads: int = 4
    access_log: bool = False
    graceful_timeout: int = 30
    request_timeout: float = 10.0  # seconds a client has to send a whole request (worker.py)
    max_body_bytes: int = 1 << 20  # a body declared or sent past this is handed on unread (the app answers 413)
    certfile: Path | None = None  # TLS: the certificate chain (PEM) and its private key
    keyfile: Path | None = None

    def __post_init__(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("TLS needs both a certificate file and its private key file")
        if self.certfile is not None:
            try:  # load them once here, so a wrong file is an error now rather than in every worker
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.certfile, self.keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot use {self.certfile} and {self.keyfile} for TLS: {exc}") from None

    @property
    def bind(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.certfile else 'http'}://{self.bind}"


@contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """A temporary directory removed by the process that made it only.

    A forked gunicorn worker leaves through SystemExit, which unwinds the
    parent's stack in the child too; a plain TemporaryDirectory would be
    deleted by the first worker to exit, under the feet of the others.
    """
    owner = os.getpid()
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)


def serve_gunicorn(factory: AppFactory, listen: Listen, metrics_dir: Path, ready_wait: float) -> None:
    """Run gunicorn in this process until SIGTERM or SIGINT (graceful: in-flight requests finish).

    A worker builds its app (waiting up to ``ready_wait`` seconds for its
    datasets) before it accepts a request; gunicorn's worker timeout is
    kept above that so a slow load is not taken for a hung worker.
    """
    try:
        from gunicorn.app.base import BaseApplication

        from .worker import CombeWorker
    except ImportError as exc:
        raise ConfigError("combe serve needs gunicorn; install it with: pip install 'combe[server]'") from exc
    if "prometheus_client.values" in sys.modules and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        raise ConfigError("prometheus_client was imported before combe serve could set PROMETHEUS_MULTIPROC_DIR; "
                          "set it in the environment to a fresh empty directory")
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    def child_exit(server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # drop its live gauges; its counters stay counted

    def worker_exit(server: Any, worker: Any) -> None:
        state = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("combe")
        if state is not None:  # any flask app can be served this way (bench/http.py serves a plain one)
            state.close()

    options: dict[str, Any] = {
        "bind": [listen.bind],
        "workers": listen.workers,
        "threads": listen.threads,
        "worker_class": type("CombeWorker", (CombeWorker,), {"request_timeout": listen.request_timeout,
                                                             "max_body_bytes": listen.max_body_bytes}),
        "graceful_timeout": listen.graceful_timeout,
        # gunicorn's limits on the request head, refused with 414 and 431 (README; the worker answers in JSON)
        "limit_request_line": 4094,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        "timeout": max(30, int(ready_wait) + 30),
        "proc_name": "combe-serve",
        "accesslog": "-" if listen.access_log else None,
        "loglevel": logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
        "certfile": str(listen.certfile) if listen.certfile else None,
        "keyfile": str(listen.keyfile) if listen.keyfile else None,
        "child_exit": child_exit,
        "worker_exit": worker_exit,
        "control_socket_disable": True,  # gunicorn >= 25: one control socket per user would clash between servers
    }

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for name, value in options.items():
                if name in self.cfg.settings and value is not None:
                    self.cfg.set(name, value)

        def load(self) -> Any:
            return factory()

    log.info("serving on %s with %d workers", listen.url, listen.workers)
    _Gunicorn().run()


def serve_dev(factory: AppFactory, listen: Listen) -> None:
    """flask's own (werkzeug) server, one process, threaded; SIGTERM or SIGINT stops it cleanly."""
    from werkzeug.serving import make_server

    app = factory()
    tls = (str(listen.certfile), str(listen.keyfile)) if listen.certfile and listen.keyfile else None
    server = make_server(listen.host, listen.port, app, threaded=True, ssl_context=tls)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=server.serve_forever, name="combe-serve-dev", daemon=True)
    thread.start()
    log.warning("serving on %s with the development server (use it for development only)", listen.url)
    try:
        while not stop.wait(0.5):  # a timed wait, so signals are handled promptly on every platform
            pass
    finally:
        server.shutdown()  # finishes the request being served, then returns
        thread.join()
        app.extensions["combe"].close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
