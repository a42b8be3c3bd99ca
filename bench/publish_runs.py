"""``combe publish --once`` as a cron job runs it: a whole process on a changelog file, timed and weighed.

Used by the producer scenario (scenarios/publish.py) and the scale mode
(scale.py). When the installed CLI has a producer state cache
(``--cache-dir``, issue 11), every publish of a run is given one directory,
so a change cycle can start from the state the first publish left there; the
harness finds out from ``combe publish --help``, so it measures the producer
of today and the one after it alike.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from .processes import Step, run

CACHE_DIR_OPTION = "--cache-dir"
DATASET = "products"
# The interpreter's own footprint for a publish: Python with combe's CLI, the producer and pyarrow imported.
INTERPRETER = [sys.executable, "-c", "import combe.cli, combe.producer, pyarrow, pyarrow.json"]


@lru_cache(maxsize=1)
def has_cache_dir() -> bool:
    """Whether ``combe publish`` takes ``--cache-dir`` (the producer keeps its state on local disk)."""
    done = subprocess.run([sys.executable, "-m", "combe", "publish", "--help"], capture_output=True, text=True,
                          check=True)
    return CACHE_DIR_OPTION in done.stdout


def publish(changelog: Path, store: Path, cache_dir: Path, *, cap_bytes: int | None = None,
            options: Sequence[str] = ()) -> tuple[Step, dict[str, Any]]:
    """One ``combe publish --once`` of ``changelog``'s new lines, with more ``options``; the step and the CLI's
    ``--json`` summary (empty when the step failed)."""
    argv = [sys.executable, "-m", "combe", "publish", "--source", str(changelog), "--store", str(store),
            "--dataset", DATASET, "--once", "--json", *options]
    if has_cache_dir():
        argv += [CACHE_DIR_OPTION, str(cache_dir)]
    step = run(argv, cap_bytes=cap_bytes)
    if not step.ok:
        return step, {}
    summary: dict[str, Any] = json.loads(step.stdout.strip().splitlines()[-1])
    return step, summary


def expect(summary: dict[str, Any], *, outcome: str = "published", **counts: int) -> None:
    """Fail unless the publish announced what it should have (a fast cycle that did nothing is no figure);
    a sharded run's shard before the last is ``pending`` (the dataset version waits for every shard)."""
    found = {name: summary.get(name) for name in counts}
    if summary.get("outcome") != outcome or found != counts:
        raise AssertionError(f"combe publish: expected {counts} {outcome}, got {summary}")
