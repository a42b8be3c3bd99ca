"""``combe publish`` without --once: a daemon that outlives failed and refused cycles, and stops only on what no
retry can fix."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from combe.cli import EXIT_USAGE, main
from combe.format.dataset import Dataset
from tests.support.changelog import append_jsonl
from tests.support.kafka_broker import KafkaBroker
from tests.support.kafka_data import RESUMABLE, produce, published, replay, unique
from tests.test_metrics import parse

DATASET = "movies"


def until(condition: Callable[[], bool], process: subprocess.Popen[str], timeout: float = 60.0) -> None:
    """Poll ``condition`` while the daemon runs; fail with its stderr if it exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def daemon(tmp_path: Path, source: Path | str, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "combe", "publish", "--source", str(source), "--store", str(tmp_path / "store"),
         "--dataset", DATASET, "--interval", "0.1", "--metrics-file", str(tmp_path / "combe.prom"), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(metrics: Path) -> str | None:
    if not metrics.exists():
        return None
    return next((key[len("combe_publish_outcome{"):-1] for key, value in parse(metrics).items()
                 if key.startswith("combe_publish_outcome{") and value == 1), None)


def test_a_refused_cycle_is_reported_and_retried_while_the_last_version_serves(tmp_path: Path) -> None:
    changelog, metrics = tmp_path / "movies.jsonl", tmp_path / "combe.prom"
    append_jsonl(changelog, [(f"m{i}", {"title": f"Movie {i}"}) for i in range(10)])
    dataset = Dataset.open(str(tmp_path / "store"), DATASET)
    process = daemon(tmp_path, changelog, "--max-removed", "20%")
    try:
        until(lambda: dataset.announced().version == 1, process)
        append_jsonl(changelog, [(f"m{i}", None) for i in range(5)])  # removes half: refused, cycle after cycle
        until(lambda: outcome(metrics) == "refused", process)
        assert dataset.announced().version == 1 and dataset.versions() == [1]
        assert parse(metrics)["combe_publish_version"] == 1  # the version consumers keep serving
        append_jsonl(changelog, [(f"m{i}", {"title": f"Movie {i} again"}) for i in range(5)])  # back in
        until(lambda: dataset.announced().version == 2, process)
        until(lambda: outcome(metrics) in ("published", "noop"), process)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "refused: movies version 2 was not announced" in err and "--max-removed 20%" in err
    assert "trying again in 0.1 s" in err
    assert Dataset.open(str(tmp_path / "store"), DATASET).manifest(2).changes["updated"] == 5


def test_a_failing_source_is_retried_until_it_is_back(tmp_path: Path) -> None:
    changelog, metrics = tmp_path / "movies.jsonl", tmp_path / "combe.prom"
    append_jsonl(changelog, [("a", {"n": 1}), ("b", {"n": 2})])
    dataset = Dataset.open(str(tmp_path / "store"), DATASET)
    process = daemon(tmp_path, changelog)
    try:
        until(lambda: dataset.announced().version == 1, process)
        changelog.write_text('{"key": "a", "value": {"n": 1}}\n')  # shorter than the announced position
        until(lambda: outcome(metrics) == "failed", process)
        append_jsonl(changelog, [("b", {"n": 2}), ("c", {"n": 3})])  # long enough again: resumes past it
        until(lambda: dataset.announced().version == 2, process)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err


def test_a_dataset_published_with_another_key_type_stops_the_daemon(tmp_path: Path) -> None:
    changelog = tmp_path / "movies.jsonl"
    append_jsonl(changelog, [("1", {"n": 1})])
    # Version 1 with string keys, published in this process: only the daemon that follows is under test.
    store = ["--store", str(tmp_path / "store"), "--dataset", DATASET]
    assert main(["publish", "--source", str(changelog), *store, "--once"]) == 0
    assert Dataset.open(str(tmp_path / "store"), DATASET).announced().version == 1
    process = daemon(tmp_path, changelog, "--key-type", "int64")
    _, err = process.communicate(timeout=60)  # no retry can make it fit: it stops at once
    assert process.returncode == EXIT_USAGE, err
    assert "--key-type string" in err and "this run asks for --key-field key --key-type int64" in err


def test_a_daemon_on_kafka_folds_the_messages_produced_after_each_version(kafka_broker: KafkaBroker,
                                                                        tmp_path: Path) -> None:
    # The source pauses the partitions it has read to their end; a later cycle of the same process must read
    # them again (librdkafka keeps a partition paused across unassign and assign).
    topic = unique("daemon")
    kafka_broker.create_topic(topic, partitions=2, config=RESUMABLE)
    rounds = [[(f"k{i}", {"n": i}) for i in range(20)]]
    produce(kafka_broker.bootstrap, topic, rounds[0])
    dataset = Dataset.open(str(tmp_path / "store"), DATASET)
    process = daemon(tmp_path, f"kafka://{kafka_broker.bootstrap}/{topic}", "--kafka-timeout", "10")
    try:
        until(lambda: dataset.announced().version == 1, process)
        assert published(dataset) == replay(*rounds)
        for round_number in (2, 3):
            version = dataset.announced().version
            rounds.append([(f"k{i}", {"n": i * round_number}) for i in range(5)] + [(f"k{round_number}", None)])
            produce(kafka_broker.bootstrap, topic, rounds[-1])
            # A cycle may start while the round is still arriving: the round is in once the state equals it.
            until(lambda: published(dataset) == replay(*rounds), process)
            assert (dataset.announced().version or 0) > (version or 0)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
