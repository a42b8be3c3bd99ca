"""``combe publish``: fold a source into a dataset, once (cron) or every --interval seconds."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType

import pyarrow as pa

from combe.format.errors import CombeError, ConfigError, ConflictError, FormatError
from combe.format.schema import Schema
from combe.producer import CycleResult, PublishOptions, Publisher, RecordFormat, open_source
from combe.producer.lease import ProducerLease
from combe.producer.pool import prefer_jemalloc
from combe.producer.sharded import ShardedCycleResult, ShardedPublisher, open_sharding
from combe.producer.sources.base import KAFKA_TIMEOUT, REBUILD_MODES, Source

from . import report_error
from .options import (add_dataset_options, add_json_option, add_settings, key_values, open_dataset, require_dataset,
                      settings_args, shard_list)
from .report import add_report_options, check_report_options, report_failure, report_following, report_success
from .validation import add_validation_options, validation_options

DESCRIPTION = """\
Read the changes a source has after the position the announced version
recorded, fold them into the dataset's state (latest value per key wins; a
null value deletes the key), and publish one new version: blobs, integrity
check, manifest, then a compare-and-swap of announced.json. A run with no
change publishes nothing.

sources:
  kafka://host:port[,host:port]/topic   every partition (needs combe[kafka])
  file://changes.jsonl or a path        {"key": ..., "value": ...} per line
  --key-delimiter , with a file         kcat-style key,value lines
  -                                     standard input (read whole each run)

sharded datasets (--shard-count N, --shards LIST): each shard is a chain of
versions of its own; a run publishes the shards it holds (a Kafka source:
their partitions, p % N == shard; a file: its keys, by murmur2), then
commits every shard's head as the next dataset version. Several processes
with disjoint --shards lists publish one dataset together.

whole states (--full-state): the source is the entire state, read whole each
run; keys the announced version has and the source lacks are removed:
  data.parquet, data.arrow / .feather, data.csv   a row per key, read in batches
  rows.jsonl                                      a JSON object per line
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("publish", help="fold a source into a new version of a dataset",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="kafka://host:port/topic, file://path, a path, or -")
    add_dataset_options(parser, signing=True)
    records = parser.add_argument_group("records")
    add_settings(records, RecordFormat)
    records.add_argument("--key-delimiter", help="file sources: lines are KEY<delim>VALUE (like kcat -K)")
    records.add_argument("--schema", type=Path, metavar="FILE",
                         help='declare the columns instead of inferring them: a JSON array in the form of a '
                              'manifest\'s "schema", [{"name": "id", "type": "int64"}, {"name": "title", "type": '
                              '"string"}, ...], the key column first (it sets --key-field and --key-type); a record '
                              "with a field it lacks or a value of another type is a bad record")
    records.add_argument("--full-state", action="store_true",
                         help="the source file is the whole state (Parquet, Arrow IPC, CSV, or JSONL rows holding "
                              "the key field): keys it lacks are removed")
    add_settings(records, PublishOptions, ("on_bad_record",))
    records.add_argument("-X", dest="client_config", action="append", metavar="KEY=VALUE",
                         help="Kafka client setting passed to librdkafka, like kcat -X (repeatable)")
    sharding = parser.add_argument_group("shards")
    sharding.add_argument("--shard-count", type=int, metavar="N",
                          help="publish a sharded dataset of N shards: fixed when the dataset is created (then "
                               "checked); with Kafka, N must divide the topic's partition count")
    sharding.add_argument("--shards", metavar="LIST",
                          help="the shards this process publishes (0-3, 1,5; default: all); other processes "
                               "publish the others, and each run commits every shard's head")
    kafka = parser.add_argument_group("kafka")
    kafka.add_argument("--group", help="consumer group the published positions are committed to, for lag "
                                       "monitoring only (default: combe-<dataset>)")
    kafka.add_argument("--rebuild", nargs="?", const="now", default=REBUILD_MODES[0], choices=REBUILD_MODES[1:],
                       help="re-read the topic from its start and publish the difference against the announced "
                            "state; =auto: only when resuming is unsafe (log start moved past the positions, or "
                            "they are older than delete.retention.ms)")
    kafka.add_argument("--kafka-timeout", type=float, default=KAFKA_TIMEOUT, metavar="SECONDS",
                       help="give up on an unreachable broker, or a read that gets no data, after this long "
                            f"(default: {KAFKA_TIMEOUT:g})")
    cycle = parser.add_argument_group("cycles")
    cycle.add_argument("--once", action="store_true",
                       help="publish at most one version and exit (for cron); otherwise run until stopped, trying "
                            "a failed or refused cycle again next interval (a configuration error stops it)")
    cycle.add_argument("--interval", type=float, default=60.0, help="seconds between cycles (default: 60)")
    cycle.add_argument("--lease", type=float, metavar="SECONDS",
                       help="one of several producers of this dataset: only the holder of the dataset's lease "
                            "(lease.json) publishes, renewing it every SECONDS/3; the others read it as often and "
                            "take it over once it has expired, at most SECONDS + SECONDS/3 after the holder's last "
                            "renewal. A producer that lost the lease never announces. Off by default")
    add_settings(cycle, PublishOptions, ("snapshot_every", "snapshot_ratio"))
    cycle.add_argument("--cache-dir", type=Path,
                       help="a local directory of this producer's own where it keeps the blobs of the announced "
                            "state (decompressed, checked on every open), so a --once run maps its state from "
                            "there instead of loading and hashing it from the store: a cycle then costs what "
                            "changed")
    cycle.add_argument("--tag", action="append", metavar="KEY=VALUE",
                       help="a string tag stored in the manifest of each version this run publishes (a source "
                            "commit, a job id, a data date); repeatable")
    add_validation_options(parser)
    add_report_options(parser)
    add_json_option(parser)
    parser.set_defaults(run=run)


def _summary(dataset: str, result: CycleResult) -> str:
    if result.recovered is not None:
        recovery = (f"{dataset}: announced.json was missing; announced version {result.recovered} again (the "
                    "newest version that loads; a store-wide pin, if one was set, is lost)")
        if result.outcome == "adopted":
            return recovery
        return f"{recovery}\n{_summary(dataset, replace(result, recovered=None))}"
    if result.outcome == "noop":
        return f"{dataset}: nothing to publish ({result.messages} messages read, version {result.version} stays)"
    if result.outcome == "adopted":
        return f"{dataset}: announced version {result.version}, left unannounced by a stopped producer"
    skipped = f", {result.bad_records} bad records skipped" if result.bad_records else ""
    if result.schema_change:
        kind = "snapshot only: a column changed type, so no delta"
    elif result.snapshot:
        kind = "snapshot" if result.version == 1 else "snapshot + delta"
    else:
        kind = "delta"
    kind += ", rebuilt from the start of the source" if result.rebuilt else ""
    return (f"{dataset}: published version {result.version} ({kind}): {result.messages} messages, "
            f"+{result.added} ~{result.updated} -{result.removed}{skipped}, "
            f"{result.bytes_written / 1e6:.2f} MB in {result.seconds:.2f} s")


class _Progress:
    """A progress line on a terminal; nothing when stderr is not one."""

    def __init__(self, lag: Callable[[], int | None] = lambda: None) -> None:
        self.lag = lag
        self.enabled = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, messages: int) -> None:
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.5:
            self.last = now
            rate = messages / max(now - self.started, 1e-9)
            lag = self.lag()
            left = f", lag {lag:,}" if lag is not None else ""
            sys.stderr.write(f"\rread {messages:,} messages ({rate:,.0f}/s{left})\033[K")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\n")


def run(args: argparse.Namespace) -> int:
    """Publish; a run that fails still writes --metrics-file and, with --json, its JSON line."""
    started = time.monotonic()
    check_report_options(args)  # outside the try: an unusable --metrics-file cannot report its own failure
    try:
        return _publish(args)
    except Exception as exc:
        report_failure(args, args.dataset or "", exc, time.monotonic() - started)
        raise


def _publish(args: argparse.Namespace) -> int:
    store, name = require_dataset(args)
    prefer_jemalloc()  # this process is the producer's: see producer/pool.py
    options = PublishOptions(fmt=RecordFormat(**settings_args(args, RecordFormat)),
                             tags=key_values(args.tag, "--tag", unique=True), cache_dir=args.cache_dir,
                             schema=schema_file(args.schema) if args.schema is not None else None,
                             **settings_args(args, PublishOptions), **validation_options(args))
    dataset = open_dataset(args, store, name)
    held = shard_list(args.shards)

    def source(shard: tuple[int, int] | None = None) -> Source:
        return open_source(args.source, key_delimiter=args.key_delimiter, full_state=args.full_state,
                           key_field=options.fmt.key_field, key_type=options.fmt.key_type,
                           client_config=key_values(args.client_config, "-X"),
                           dataset=name, group=args.group, rebuild=args.rebuild, timeout=args.kafka_timeout,
                           shard=shard)

    if held is None and args.shard_count is None:
        lease = ProducerLease(dataset, options.producer_id, args.lease) if args.lease is not None else None
        with source() as single:
            if args.once:
                return _once(Publisher(dataset, single, options, _Progress(single.lag), lease), args, name)
            return _daemon(Publisher(dataset, single, options, lease=lease), args, name, lease)
    if args.lease is not None:
        raise ConfigError("--lease is for unsharded datasets: the producers of a sharded dataset each publish "
                          "their own shards")
    sharding = open_sharding(dataset, args.shard_count, options.fmt, options.producer_id, options.clock)
    shards = held if held is not None else range(sharding.shard_count)
    with ShardedPublisher(dataset, sharding, shards, lambda i: source((i, sharding.shard_count)), options,
                          _Progress() if args.once else None) as publisher:
        return _cycle(publisher, args, name) if args.once else _daemon(publisher, args, name)


def schema_file(path: Path) -> pa.Schema:
    """The schema declared in ``path`` (``--schema``), in the Arrow form PublishOptions takes."""
    try:
        return Schema.of_json(json.loads(path.read_bytes())).declared_arrow()
    except OSError as exc:
        raise ConfigError(f"--schema {path}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, FormatError) as exc:  # not JSON, or not a schema
        raise ConfigError(f"--schema {path}: {exc}") from None


def _once(publisher: Publisher, args: argparse.Namespace, name: str) -> int:
    """One cycle; with --lease, only if this run can take the lease, which it lets go when done."""
    lease = publisher.lease
    if lease is None:
        return _cycle(publisher, args, name)
    if not lease.acquire():
        raise ConflictError(f"{name}: {_holder(lease)}; nothing was published by this run",
                            dataset=name, version=0)
    lease.start_renewing()
    try:
        return _cycle(publisher, args, name)
    finally:
        lease.release()


def _holder(lease: ProducerLease) -> str:
    seen = lease.seen
    if seen is None or seen.holder == lease.holder:
        return "another producer took the lease at the same moment"
    return f"the lease is held by {seen.holder} (epoch {seen.epoch}) until {seen.expires_at}"


def _sharded_summary(dataset: str, result: ShardedCycleResult) -> str:
    lines = [_summary(f"{dataset} shard {shard}", part) for shard, part in result.shards.items()]
    if result.commit == "pending":
        lines.append(f"{dataset}: shards {', '.join(map(str, result.pending))} have no version yet; the first "
                     "dataset version is committed once every shard has one")
    elif result.commit == "committed":
        lines.append(f"{dataset}: committed version {result.version} (the heads of all shards)")
    else:
        lines.append(f"{dataset}: version {result.version} names every shard's head already")
    return "\n".join(lines)


def _cycle(publisher: Publisher | ShardedPublisher, args: argparse.Namespace, name: str) -> int:
    progress = publisher.on_progress
    try:
        result = publisher.run_cycle()
    finally:
        if isinstance(progress, _Progress):
            progress.done()
    report_success(args, name, result, _leading(publisher))
    if not args.json:
        print(_sharded_summary(name, result) if isinstance(result, ShardedCycleResult) else _summary(name, result))
    return 0


# The errors a daemon stops on: no later cycle can succeed. A ConfigError in a cycle means the options do not
# fit the dataset (it was published with another key field, key type or value format). Everything else a
# cycle raises as a CombeError (a refused version, a lost race, a bad record, a source or store that fails,
# a damaged manifest) may be gone by the next interval, or is fixed by someone while the daemon waits.
# Other exceptions are bugs: they stop it with their traceback.
FATAL = (ConfigError,)


def _daemon(publisher: Publisher | ShardedPublisher, args: argparse.Namespace, name: str,
            lease: ProducerLease | None = None) -> int:
    """Cycles every --interval seconds until SIGTERM or SIGINT.

    A cycle that fails is reported as a --once run's failure is (stderr,
    --json, --metrics-file) and tried again at the next interval; it announced
    nothing, so consumers keep the last good version meanwhile. FATAL errors
    stop the daemon with their exit code. With a ``lease``, cycles run only
    while this daemon holds it; otherwise it reads the lease every third of its
    duration and takes it once it has expired (producer/lease.py).
    """
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    if lease is not None:
        lease.start_renewing()
    try:
        while not stop.is_set():
            if lease is not None and not _lead(lease, args, name):
                stop.wait(lease.interval)
                continue
            started = time.monotonic()
            try:
                _cycle(publisher, args, name)
            except FATAL:
                raise
            except CombeError as exc:
                report_failure(args, name, exc, time.monotonic() - started, _leading(publisher))
                report_error(exc, args, f"; trying again in {args.interval:g} s")
            stop.wait(args.interval)
    finally:
        if lease is not None:
            lease.release()
    return 0


def _leading(publisher: Publisher | ShardedPublisher) -> bool | None:
    """For the metrics: whether a producer run with a lease holds it (None without one)."""
    lease = publisher.lease if isinstance(publisher, Publisher) else None
    return None if lease is None else lease.held


def _lead(lease: ProducerLease, args: argparse.Namespace, name: str) -> bool:
    """Whether this daemon holds the lease now, taking it if it is free; says on stderr when that changes."""
    if lease.held:
        return True
    following = lease.seen
    try:
        if lease.acquire():
            print(f"{name}: took the lease (epoch {lease.epoch}); publishing", file=sys.stderr)
            return True
    except CombeError as exc:
        report_error(exc, args, f"; trying again in {lease.interval:g} s")
        return False
    report_following(args, name)
    seen = lease.seen
    if seen is not None and (following is None or (seen.holder, seen.epoch) != (following.holder, following.epoch)):
        print(f"{name}: following; {_holder(lease)}", file=sys.stderr)
    return False
