"""What a publish run did, for cron: a Prometheus textfile and a one-line JSON summary.

node-exporter's textfile collector reads every ``*.prom`` file of a directory
at each scrape, and a file it catches half-written is a scrape error; so the
file is written beside its final name (a name the collector ignores) and
renamed over it, which is atomic on POSIX. Each run rewrites the whole file,
so the two values a failed run must not change, the time of the last
success and the version it left announced, are carried over from the file
being replaced. Alert on ``time() - combe_publish_last_success_timestamp_seconds``
and on ``combe_publish_outcome{outcome=~"refused|conflict|failed"} == 1``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from combe.format.errors import ConfigError, ConflictError, ValidationError

from .cycle import CycleResult

log = logging.getLogger(__name__)

# "following": a daemon run with a lease that another producer holds (it publishes nothing, by design).
SUCCESS = ("published", "noop", "adopted", "pending", "following")
OUTCOMES = (*SUCCESS, "refused", "conflict", "failed")
PREFIX = "combe_publish_"


def outcome_of(error: BaseException) -> str:
    """``refused`` (a validator), ``conflict`` (another producer won) or ``failed``."""
    if isinstance(error, ValidationError):
        return "refused"
    if isinstance(error, ConflictError):
        return "conflict"
    return "failed"


@dataclass(frozen=True)
class RunReport:
    """One run's outcome: the cycle's result when it finished, the error when it did not."""

    dataset: str
    outcome: str
    seconds: float
    finished_at: float
    result: CycleResult | None = None
    error: str | None = None
    leader: bool | None = None  # with a lease: whether this producer held it after the run

    @classmethod
    def succeeded(cls, dataset: str, result: CycleResult, seconds: float, leader: bool | None = None) -> RunReport:
        return cls(dataset, result.outcome, seconds, time.time(), result=result, leader=leader)

    @classmethod
    def failed(cls, dataset: str, error: BaseException, seconds: float, leader: bool | None = None) -> RunReport:
        return cls(dataset, outcome_of(error), seconds, time.time(), error=str(error), leader=leader)

    @classmethod
    def following(cls, dataset: str) -> RunReport:
        return cls(dataset, "following", 0.0, time.time(), leader=False)

    def summary(self) -> dict[str, Any]:
        """The ``--json`` line: the cycle's counts on success, the outcome and the error otherwise."""
        if self.result is not None:
            return {"dataset": self.dataset, **asdict(self.result)}
        return {"dataset": self.dataset, "outcome": self.outcome, "error": self.error,
                "seconds": round(self.seconds, 6)}


def _series(name: str, dataset: str, **labels: str) -> str:
    pairs = {"dataset": dataset, **labels}
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())
    return f"{PREFIX}{name}{{{text}}}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(report: RunReport, last_success: float | None, version: int | None) -> str:
    """The textfile for ``report``; ``last_success`` and ``version`` as carried over or updated."""
    lines: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {PREFIX}{name} {help_text}")
        lines.append(f"# TYPE {PREFIX}{name} gauge")
        lines.extend(f"{_series(name, report.dataset, **labels)} {_number(value)}" for labels, value in samples)

    gauge("last_run_timestamp_seconds", "When the last publish run ended (Unix time).",
          [({}, report.finished_at)])
    if last_success is not None:
        gauge("last_success_timestamp_seconds", "When a publish run last ended without error (Unix time).",
              [({}, last_success)])
    gauge("outcome", "1 for how the last run ended: published, noop (nothing to publish), adopted, pending (a "
          "sharded dataset's shards published, some shard has no version yet), following (another producer "
          "holds the lease), refused (by a validator), conflict (another producer won) or failed.",
          [({"outcome": outcome}, float(outcome == report.outcome)) for outcome in OUTCOMES])
    gauge("duration_seconds", "How long the last run took.", [({}, report.seconds)])
    if report.leader is not None:
        gauge("is_leader", "1 while this producer holds the dataset's lease, 0 while it follows (producers run "
              "with one).", [({}, float(report.leader))])
    if version is not None:
        gauge("version", "The version announced after the last successful run.", [({}, float(version))])
    result = report.result
    if result is not None:
        gauge("messages_read", "Messages the last run read from the source.", [({}, float(result.messages))])
        gauge("changes", "Records the last run added, updated and removed.",
              [({"change": "added"}, float(result.added)), ({"change": "updated"}, float(result.updated)),
               ({"change": "removed"}, float(result.removed))])
        gauge("bytes_written", "Bytes of blobs and manifest the last run wrote.",
              [({}, float(result.bytes_written))])
        gauge("bad_records", "Records the last run skipped (on_bad_record=skip).",
              [({}, float(result.bad_records))])
    return "\n".join(lines) + "\n"


def _carried(path: Path, dataset: str) -> tuple[float | None, int | None]:
    """Last success time and version from the file a failed run replaces (None when absent)."""
    try:
        text = path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None, None
    except OSError as exc:
        log.warning("cannot read the previous metrics file %s (%s); its last success time is lost", path, exc)
        return None, None
    found: dict[str, float] = {}
    for name in ("last_success_timestamp_seconds", "version"):
        series = _series(name, dataset) + " "
        for line in text.splitlines():
            if line.startswith(series):
                try:
                    found[name] = float(line[len(series):])
                except ValueError:
                    pass
    version = found.get("version")
    return found.get("last_success_timestamp_seconds"), None if version is None else int(version)


def write_textfile(path: str | Path, report: RunReport) -> None:
    """Write the metrics of ``report`` to ``path`` atomically, readable by the node-exporter user."""
    target = Path(path)
    last_success, version = _carried(target, report.dataset)
    if report.outcome in SUCCESS:
        last_success = report.finished_at
        if report.result is not None and report.result.version is not None:
            version = report.result.version
    text = render(report, last_success, version)
    try:
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"metrics file {target}: cannot write in {target.parent} ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temp, 0o644)  # mkstemp makes it private; the collector often runs as another user
        os.replace(temp, target)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ConfigError(f"metrics file {target}: cannot write it ({exc.strerror})") from exc
        raise
