"""Where and on what the figures were measured: machine, versions, commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import confluent_kafka
import numpy
import pyarrow
import zstandard

import combe.consumer

from tests.support.kafka_broker import kafka_version

ROOT = Path(__file__).resolve().parents[1]


def _proc_field(path: str, name: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _version(distribution: str) -> str | None:
    """An installed distribution's version, without importing it (None when it is not installed)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def combe_tree() -> Path:
    """The source tree combe is imported from: an editable install elsewhere means other code is measured."""
    return Path(combe.consumer.__file__).resolve().parents[1]


def commit(tree: Path) -> str:
    """The commit of ``tree``, with "+dirty" when its tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def describe() -> dict[str, Any]:
    tree = combe_tree()
    memory = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "memory_gb": round(int(memory.split()[0]) / 2**20, 1) if memory else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
        "zstandard": zstandard.__version__,
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "kafka_broker": kafka_version(),
        "deltalake": _version("deltalake"),
        "combe_tree": str(tree),
        "commit": commit(tree),
    }
