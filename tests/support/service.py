"""What the test services (Kafka broker, S3 server, fault proxy) share: a context manager over
start() and stop(), a handle another process can attach to, a polite stop for a child process, and the
file lock that serialises test processes (pytest-xdist workers)."""

from __future__ import annotations

import fcntl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

S = TypeVar("S", bound="Service")


class Service:
    """Started by ``start()``, stopped by ``stop()``; ``with`` does both."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def handle(self) -> dict[str, Any]:
        """What another process needs to use this running service (tests/support/shared.py): JSON, with the
        ``pid`` to stop and the ``files`` to remove once the service is no longer needed."""
        raise NotImplementedError

    def __enter__(self: S) -> S:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def terminate(process: subprocess.Popen[bytes] | subprocess.Popen[str] | None, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout`` seconds; reap it either way."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) against the run's other test processes."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
