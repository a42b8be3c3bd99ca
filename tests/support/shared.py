"""One Kafka broker and one S3 server for a whole test run, however many processes run its tests.

pytest-xdist runs the tests in worker processes, each with session fixtures of its own: per worker, each
service would start once per worker (a broker costs seconds of CPU and half a gigabyte). Instead the run's
main process makes a directory that the workers inherit (its path in ENV); the first process that needs a
service starts it, under a lock, and writes its handle there (pid, port, files); every other process
attaches to it. A service outlives the worker that started it (another one may still be using it): the
main process stops them all when the run ends, after every worker has exited. Without xdist the one
process is both.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support.service import Service, file_lock

ENV = "COMBE_TEST_SERVICES"
S = TypeVar("S", bound=Service)

# The services this process started, kept referenced until the run ends: a Popen collected while its
# process still runs warns, and warnings fail tests.
_started: dict[str, Service] = {}


def open_run() -> None:
    """In the main process, before any worker starts: the run's directory, which the workers inherit."""
    os.environ[ENV] = tempfile.mkdtemp(prefix="combe-test-services-")


def shared(name: str, service: S, attach: Callable[[dict[str, Any]], S]) -> S:
    """The run's service ``name``: ``service`` started here if no process of the run has started it yet,
    otherwise ``attach`` applied to the handle of the one that was. A failed start is recorded, so the other
    processes fail at once with its error rather than trying again."""
    root = Path(os.environ[ENV])
    handle, failure = root / f"{name}.json", root / f"{name}.failed"
    with file_lock(root / f"{name}.lock"):  # held while starting: the others wait for the service, not race it
        if failure.is_file():
            raise RuntimeError(f"the test run's {name} service failed to start in another process:\n"
                               f"{failure.read_text()}")
        if handle.is_file():
            return attach(json.loads(handle.read_text()))
        try:
            service.start()
        except Exception as exc:
            failure.write_text(f"{type(exc).__name__}: {exc}")
            raise
        _started[name] = service
        handle.write_text(json.dumps(service.handle()))
        return service


def close_run() -> None:
    """In the main process, once every worker has exited: stop the run's services, remove their files."""
    root = Path(os.environ.pop(ENV))
    for path in sorted(root.glob("*.json")):
        started_here = _started.pop(path.stem, None)
        if started_here is not None:
            started_here.stop()  # its own child: stop() waits for it and removes its files
            continue
        handle = json.loads(path.read_text())
        _stop_orphan(handle["pid"])
        for name in handle["files"]:
            if os.path.isdir(name):
                shutil.rmtree(name, ignore_errors=True)
            else:
                Path(name).unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)


def _stop_orphan(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM a service whose parent (a worker) has exited, SIGKILL it after ``timeout`` seconds; return once
    it is gone. Not our child, so it cannot be waited for: poll /proc until init has reaped it (or it is a
    zombie, where init does not reap)."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _running(pid):
                return
            time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # the state follows the command name in parentheses
