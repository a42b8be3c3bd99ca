"""The results document as a table: plain text for the terminal, Markdown for bench/README.md.

    python -m bench.report bench/results-full.json     # Markdown, to paste into the README
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"


def _goal(figure: dict[str, Any]) -> str:
    if "goal" not in figure:
        return ""
    op, threshold = figure["goal"].split()
    return f"{op} {number(float(threshold))} {'met' if figure['met'] else 'MISSED'}"


def text(document: dict[str, Any]) -> str:
    figures = document["figures"]
    width = max([len("figure"), *map(len, figures)])
    lines = [f"{'figure':<{width}}  {'median':>12} {'min':>12} {'max':>12}  {'unit':<7} goal"]
    for name, f in figures.items():
        lines.append(f"{name:<{width}}  {number(f['median']):>12} {number(f['min']):>12} {number(f['max']):>12}"
                     f"  {f['unit']:<7} {_goal(f)}")
    if "steps" in document:
        lines += ["", f"{'records':>12}  {'step':<16} {'status':<8} {'seconds':>9} {'peak RSS MB':>12}  detail"]
        lines += [f"{s['records']:>12,}  {s['step']:<16} {s['status']:<8} {_blank(s['seconds'], '.1f'):>9} "
                  f"{_blank(s['peak_rss_mb'], ',.0f'):>12}  {s['detail']}" for s in document["steps"]]
    return "\n".join(lines)


def _blank(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown(document: dict[str, Any]) -> str:
    lines = ["| figure | median | min | max | unit | goal |", "| --- | ---: | ---: | ---: | --- | --- |"]
    for name, f in document["figures"].items():
        lines.append(f"| `{name}` | {number(f['median'])} | {number(f['min'])} | {number(f['max'])} | {f['unit']} "
                     f"| {_goal(f)} |")
    if "steps" in document:  # scale mode: every step, finished or not
        lines += ["", "| records | step | status | seconds | peak RSS (MB) | detail |",
                  "| ---: | --- | --- | ---: | ---: | --- |"]
        lines += [f"| {s['records']:,} | {s['step']} | {s['status']} | {_blank(s['seconds'], '.1f')} | "
                  f"{_blank(s['peak_rss_mb'], ',.0f')} | {s['detail']} |" for s in document["steps"]]
    machine = document["machine"]
    records = " and ".join(f"{n:,}" for n in document.get("sizes", [document["records"]]))
    if document.get("shard_count"):  # scale mode's sharded run
        records += f" in {document['shard_count']} shards"
    lines += ["", f"{document['mode']} mode, {records} records, {document['runs']} runs per figure, "
              f"{document['seconds'] / 60:.0f} min, {document['created_at']}, commit {machine['commit']}.",
              f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory_gb']} GB, "
              f"Linux {machine['kernel']}; Python {machine['python']}, pyarrow {machine['pyarrow']}, "
              f"numpy {machine['numpy']}, zstandard {machine['zstandard']}, confluent-kafka "
              f"{machine['confluent_kafka']} (librdkafka {machine['librdkafka']}), Kafka {machine['kafka_broker']}"
              f"{', deltalake ' + machine['deltalake'] if machine.get('deltalake') else ''}."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
