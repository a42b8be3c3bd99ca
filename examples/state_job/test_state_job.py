"""The whole-state job, run as a program against a store in a temporary directory."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from combe import Consumer

JOB = Path(__file__).with_name("job.py")
PRICES = Path(__file__).with_name("prices.csv")


def run(prices: Path, store: Path) -> subprocess.CompletedProcess[str]:
    """The job as a program, in an interpreter of its own."""
    return subprocess.run([sys.executable, str(JOB), "--input", str(prices), "--store", str(store)],
                          capture_output=True, text=True, timeout=120)


def run_here(prices: Path, store: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The job's main() in this process (exit status, stdout, stderr): the later runs, once run() has shown
    the program itself works, without an interpreter each."""
    status = runpy.run_path(str(JOB))["main"](["--input", str(prices), "--store", str(store)])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_job_publishes_its_state_and_refuses_a_truncated_input(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    store, prices = tmp_path / "store", tmp_path / "prices.csv"
    prices.write_text(PRICES.read_text())
    first = run(prices, store)
    assert first.returncode == 0 and "published version 1 (+4 ~0 -0)" in first.stdout, first.stderr
    again = run_here(prices, store, capsys)
    assert again[0] == 0 and again[1].strip() == "prices: unchanged, version 1 stays", again

    # The mug's price changes and the whisk is no longer sold: the next state says so, no delete is written.
    lines = PRICES.read_text().replace("B-200,mug,6.0", "B-200,mug,7.0").splitlines()
    prices.write_text("\n".join(line for line in lines if not line.startswith("C-300")) + "\n")
    status, out, err = run_here(prices, store, capsys)
    assert status == 0 and "published version 2 (+0 ~1 -1)" in out, err
    with Consumer(str(store), "prices") as consumer:
        assert consumer.get("C-300") is None
        assert consumer.get("B-200") == {"sku": "B-200", "name": "mug", "price": 7.0, "price_with_tax": 8.4}

    prices.write_text(lines[0] + "\n" + lines[1] + "\n")  # a truncated export: one row of three
    refused = run(prices, store)  # as a program again: a refusal is the exit status a scheduler sees
    assert refused.returncode == 1 and "it would remove 2 of 3 records" in refused.stderr, refused.stderr
    with Consumer(str(store), "prices") as consumer:
        assert consumer.version == 2 and len(consumer) == 3
