"""What the test services (Kafka broker, S3 server, fault proxy) share: a context manager over
start() and stop(), and a polite stop for a child process."""

from __future__ import annotations

import subprocess
from types import TracebackType
from typing import TypeVar

S = TypeVar("S", bound="Service")


class Service:
    """Started by ``start()``, stopped by ``stop()``; ``with`` does both."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
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
