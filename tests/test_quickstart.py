"""The quick start says where its store is and what to run next, and those commands work on it."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_quick_start_prints_its_store_and_next_commands_that_work(tmp_path: Path) -> None:
    store = tmp_path / "my store"  # a space: the printed commands must quote it
    done = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart.py"), str(store)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"The store is {store}; dataset movies is in {store / 'movies'}" in done.stdout
    commands = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("combe ")]
    assert [c.split()[1] for c in commands] == ["inspect", "get", "serve"]
    for command in commands:
        assert f"--store {shlex.quote(str(store))} --dataset movies" in command
    # serve runs until stopped (tests/test_server.py runs it); the other two run here as printed.
    inspect, get = (subprocess.run([sys.executable, "-m", "combe", *shlex.split(command)[1:]], capture_output=True,
                                   text=True, timeout=120) for command in commands[:2])
    assert inspect.returncode == 0 and get.returncode == 0, inspect.stderr + get.stderr
    assert inspect.stdout.startswith(f"movies at {store / 'movies'}: announced version 1")
    assert [json.loads(line)["key"] for line in get.stdout.splitlines()] == ["tt0034583", "tt0075148"]
