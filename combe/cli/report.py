"""What a ``combe publish`` run tells cron: the ``--metrics-file`` textfile and the ``--json`` line.

Failures are reported too: a cron job's monitoring needs the run that failed
more than the one that worked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from combe.format.errors import ConfigError
from combe.producer import CycleResult
from combe.producer.metrics import RunReport, write_textfile

from .options import emit_json


def add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-file", metavar="PATH",
                        help="write Prometheus metrics of each run to PATH (atomically; for node-exporter's "
                             "textfile collector, name it *.prom in its directory)")


def check_report_options(args: argparse.Namespace) -> None:
    """Refuse an unusable --metrics-file before publishing rather than after."""
    if args.metrics_file and not Path(args.metrics_file).parent.is_dir():
        raise ConfigError(f"--metrics-file {args.metrics_file}: the directory {Path(args.metrics_file).parent} "
                          "does not exist")


def report_success(args: argparse.Namespace, dataset: str, result: CycleResult, leader: bool | None = None) -> None:
    """Metrics, and with --json the summary line (the caller prints the text summary otherwise)."""
    report = RunReport.succeeded(dataset, result, result.seconds, leader)
    if args.json:
        emit_json(report.summary())
    if args.metrics_file:
        write_textfile(args.metrics_file, report)


def report_failure(args: argparse.Namespace, dataset: str, error: BaseException, seconds: float,
                   leader: bool | None = None) -> None:
    """Metrics, and with --json a line on stdout; the message itself goes to stderr as for any failure."""
    report = RunReport.failed(dataset, error, seconds, leader)
    if args.json:
        emit_json(report.summary())
    if args.metrics_file:
        write_textfile(args.metrics_file, report)


def report_following(args: argparse.Namespace, dataset: str) -> None:
    """Metrics of a daemon waiting for the lease another producer holds (no --json line: nothing was run)."""
    if args.metrics_file:
        write_textfile(args.metrics_file, RunReport.following(dataset))
