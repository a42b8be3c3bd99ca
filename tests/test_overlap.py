"""Overlapping cron runs: two ``combe publish --once`` processes at once; one publishes, the other steps aside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from combe.cli import EXIT_CONFLICT, main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from tests.support.changelog import append_jsonl, replay, table_state

DATASET = "movies"

# A validator that holds each run until both have folded their changes (validators run after the fold,
# before the manifest), so the two cycles overlap for certain however the machine schedules them.
BARRIER = '''
import os, time
from pathlib import Path

def both_arrived(context):
    folder = Path(os.environ["COMBE_TEST_BARRIER"])
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 30
    while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
'''


def test_two_overlapping_runs_publish_exactly_one_version(tmp_path: Path) -> None:
    store, changelog = str(tmp_path / "store"), tmp_path / "movies.jsonl"
    first = [(f"m{i}", {"title": f"Movie {i}"}) for i in range(20)]
    append_jsonl(changelog, first)
    assert main(["publish", "--source", str(changelog), "--store", store, "--dataset", DATASET, "--once"]) == 0
    second = [("m1", {"title": "Movie 1 (remastered)"}), ("m20", {"title": "Movie 20"})]
    append_jsonl(changelog, second)

    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "barrier.py").write_text(BARRIER)
    (tmp_path / "arrived").mkdir()
    env = {**os.environ, "COMBE_TEST_BARRIER": str(tmp_path / "arrived"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "checks"), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "combe", "publish", "--source", str(changelog), "--store", store,
               "--dataset", DATASET, "--once", "--json", "--validator", "barrier:both_arrived"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = []
    for run in runs:
        out, err = run.communicate(timeout=60)
        results.append((run.returncode, out, err))

    assert len(list((tmp_path / "arrived").iterdir())) == 2  # both were mid-cycle at the same time
    assert sorted(code for code, _, _ in results) == [0, EXIT_CONFLICT], results
    (_, won, _), = [r for r in results if r[0] == 0]
    (_, lost, lost_err), = [r for r in results if r[0] == EXIT_CONFLICT]
    assert json.loads(won)["outcome"] == "published" and json.loads(won)["version"] == 2
    assert json.loads(lost)["outcome"] == "conflict"
    assert "version 2 was written by another producer first; nothing was announced by this one" in lost_err
    assert "Traceback" not in lost_err

    dataset = Dataset.open(store, DATASET)
    assert dataset.versions() == [1, 2] and dataset.announced().version == 2
    with Consumer(store, DATASET) as consumer:
        assert table_state(consumer.view().table, consumer.view().schema) == replay(first + second)
    # The next cron run finds the winner's version and nothing left to do.
    assert main(["publish", "--source", str(changelog), "--store", store, "--dataset", DATASET, "--once"]) == 0
    assert dataset.versions() == [1, 2]
