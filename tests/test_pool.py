"""combe publish allocates Arrow memory from jemalloc where pyarrow has it, unless the environment chooses."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

PROBE = "from combe.producer.pool import prefer_jemalloc; import pyarrow as pa; " \
        "print(prefer_jemalloc(), pa.default_memory_pool().backend_name)"


def probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def test_jemalloc_becomes_the_default_pool() -> None:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        assert probe().startswith("False ")
        pytest.skip("this pyarrow has no jemalloc")
    assert probe() == "True jemalloc"


def test_a_pool_named_in_the_environment_is_kept() -> None:
    assert probe(ARROW_DEFAULT_MEMORY_POOL="system") == "False system"
