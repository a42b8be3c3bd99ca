"""Cron metrics: the Prometheus textfile and the --json line, for runs that work and runs that do not."""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path

import pytest

from combe.cli import EXIT_FAILURE, EXIT_REFUSED, EXIT_USAGE, main
from combe.format.dataset import Dataset
from combe.format.errors import ConflictError, SourceError, ValidationError
from combe.producer import CycleResult
from combe.producer.metrics import RunReport, outcome_of, render
from tests.support.changelog import append_jsonl

DATASET = "movies"
SAMPLE = re.compile(r'^(combe_publish_[a-z_]+)\{dataset="movies"(?:,(\w+)="([a-z]+)")?\} (-?[0-9.e+]+)$')


@pytest.fixture
def changelog(tmp_path: Path) -> Path:
    path = tmp_path / "movies.jsonl"
    append_jsonl(path, [(f"m{i}", {"title": f"Movie {i}"}) for i in range(10)])
    return path


def publish(tmp_path: Path, changelog: Path, *flags: str) -> int:
    return main(["publish", "--source", str(changelog), "--store", str(tmp_path / "store"), "--dataset", DATASET,
                 "--once", "--metrics-file", str(tmp_path / "metrics" / "combe.prom"), *flags])


def parse(path: Path) -> dict[str, float]:
    """The textfile as {"name" or "name{label}": value}, checking the exposition format on the way."""
    samples: dict[str, float] = {}
    declared: set[str] = set()
    for line in path.read_text().splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind == "gauge"
            declared.add(name)
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name, label, label_value, value = match.groups()
        assert name in declared, f"{name} has no # TYPE line before it"
        samples[f"{name}{{{label_value}}}" if label else name] = float(value)
    return samples


def test_a_published_run_writes_every_metric(tmp_path: Path, changelog: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metrics").mkdir()
    before = time.time()
    assert publish(tmp_path, changelog, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    metrics = parse(tmp_path / "metrics" / "combe.prom")
    assert metrics["combe_publish_outcome{published}"] == 1
    assert sum(v for k, v in metrics.items() if k.startswith("combe_publish_outcome{")) == 1
    assert metrics["combe_publish_messages_read"] == 10 == summary["messages"]
    assert metrics["combe_publish_changes{added}"] == 10
    assert metrics["combe_publish_changes{updated}"] == metrics["combe_publish_changes{removed}"] == 0
    assert metrics["combe_publish_bytes_written"] == summary["bytes_written"] > 0
    assert metrics["combe_publish_bad_records"] == 0
    assert metrics["combe_publish_version"] == 1
    assert metrics["combe_publish_duration_seconds"] > 0
    assert before <= metrics["combe_publish_last_success_timestamp_seconds"] <= time.time()
    mode = (tmp_path / "metrics" / "combe.prom").stat().st_mode
    assert stat.S_IMODE(mode) == 0o644  # node-exporter usually runs as another user
    assert [p.name for p in (tmp_path / "metrics").iterdir()] == ["combe.prom"]  # no temporary left behind


def test_a_refused_run_keeps_the_last_success(tmp_path: Path, changelog: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metrics").mkdir()
    prom = tmp_path / "metrics" / "combe.prom"
    assert publish(tmp_path, changelog) == 0
    first = parse(prom)
    inode = prom.stat().st_ino
    append_jsonl(changelog, [(f"m{i}", None) for i in range(8)])
    capsys.readouterr()
    assert publish(tmp_path, changelog, "--json") == EXIT_REFUSED
    captured = capsys.readouterr()
    line = json.loads(captured.out)
    assert line["dataset"] == DATASET and line["outcome"] == "refused"
    assert "would remove 8 of 10 records (80%)" in line["error"] and "refused" in captured.err

    metrics = parse(prom)
    assert prom.stat().st_ino != inode  # replaced by a rename, never rewritten in place
    assert metrics["combe_publish_outcome{refused}"] == 1 and metrics["combe_publish_outcome{published}"] == 0
    last_success = "combe_publish_last_success_timestamp_seconds"
    assert metrics[last_success] == first[last_success]
    assert metrics["combe_publish_version"] == 1
    assert metrics["combe_publish_last_run_timestamp_seconds"] > first["combe_publish_last_run_timestamp_seconds"]
    assert "combe_publish_messages_read" not in metrics  # a run that did not finish has no counts to give

    assert publish(tmp_path, changelog, "--no-max-removed") == 0
    assert publish(tmp_path, changelog) == 0  # nothing new: a success too
    metrics = parse(prom)
    assert metrics["combe_publish_outcome{noop}"] == 1 and metrics["combe_publish_version"] == 2
    assert metrics[last_success] > first[last_success]


def test_a_run_that_cannot_start_reports_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metrics").mkdir()
    assert publish(tmp_path, tmp_path / "missing.jsonl", "--json") == EXIT_FAILURE
    line = json.loads(capsys.readouterr().out)
    assert line["outcome"] == "failed" and "does not exist" in line["error"]
    metrics = parse(tmp_path / "metrics" / "combe.prom")
    assert metrics["combe_publish_outcome{failed}"] == 1
    assert "combe_publish_last_success_timestamp_seconds" not in metrics  # there never was one


def test_a_metrics_file_in_a_missing_directory_is_refused_before_publishing(
        tmp_path: Path, changelog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert publish(tmp_path, changelog) == EXIT_USAGE
    assert "--metrics-file" in capsys.readouterr().err
    assert Dataset.open(str(tmp_path / "store"), DATASET).announced().pointer is None


def test_outcomes_and_escaping() -> None:
    assert outcome_of(ValidationError("x", dataset="d", version=1, validator="v")) == "refused"
    assert outcome_of(ConflictError("x", dataset="d", version=1)) == "conflict"
    assert outcome_of(SourceError("x")) == "failed"
    report = RunReport.succeeded('we"ird', CycleResult("noop", 3), 0.5)
    assert 'dataset="we\\"ird"' in render(report, None, 3)
    assert report.summary()["outcome"] == "noop"
