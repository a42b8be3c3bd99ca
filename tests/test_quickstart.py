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
    commands = done.stdout.split("Next, try:\n", 1)[1].splitlines()[:3]
    assert all(line.startswith("  ") for line in commands), done.stdout
    argvs = [shlex.split(line) for line in commands]
    assert [argv[1] for argv in argvs] == ["inspect", "get", "serve"]
    for argv in argvs:
        assert argv[2:6] == ["--store", str(store), "--dataset", "movies"]
    # Run as printed (serve runs until stopped: tests/test_server.py runs it).
    inspect, get = (subprocess.run(argv, capture_output=True, text=True, timeout=120) for argv in argvs[:2])
    assert inspect.returncode == 0 and get.returncode == 0, inspect.stderr + get.stderr
    assert inspect.stdout.startswith(f"movies at {store / 'movies'}: announced version 1")
    assert [json.loads(line)["key"] for line in get.stdout.splitlines()] == ["tt0034583", "tt0075148"]
