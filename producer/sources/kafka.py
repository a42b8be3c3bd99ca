"""A compacted Kafka topic as a source: every partition, read from exact positions to the start watermarks.

The manifest's positions are the truth for resuming, so the consumer never
subscribes: it assigns each partition at the offset the announced version
recorded (a partition added later starts at its beginning) and reads up to
the end each partition had when the read began (under read_committed, the
last stable offset, so aborted and still-open transactions are never
folded). Offsets are committed to a consumer group only after a version is
announced, and only so that lag tools can watch the publisher.

Two things can make resuming unsafe, and both are checked before a read:
the log start offset has passed a stored position (records were deleted),
or the stored positions are older than the topic's ``delete.retention.ms``
(the log cleaner may have dropped tombstones the producer never saw). Then
the cycle either stops with an error naming ``--rebuild``, or, with
``--rebuild``, re-reads the topic from its start and publishes the
difference against the announced state.
"""

from __future__ import annotations

import logging
import operator
import re
import time
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from itertools import repeat
from typing import Any, TypeVar

import numpy as np
from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, OffsetSpec, ResourceType

from combe.format.errors import ConfigError, SourceError

from .base import KAFKA_TIMEOUT, REBUILD_MODES, Messages, Positions, Source

log = logging.getLogger(__name__)

BATCH_MESSAGES = 10_000
# How long one consume() call may wait. Since confluent-kafka 2.13, consume() keeps collecting until it has
# num_messages or the timeout passes, so a short wait bounds the pause at the end of a read.
POLL_SECONDS = 0.1
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

# Settings combe must own to keep its guarantees, and why.
MANAGED = {
    "bootstrap.servers": "name the brokers in the source URL: kafka://host:port[,host:port]/topic",
    "enable.auto.commit": "combe commits only the positions of versions it announced",
    "enable.partition.eof": "combe relies on end-of-partition events to know a read is complete",
    "auto.offset.reset": "combe starts each partition at the exact position of the announced version",
}
TRANSIENT = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT, KafkaError._RESOLVE}
# What a partition's leader answers while leadership moves (a broker restarting, an election): it goes away.
LEADER_MOVING = {KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.FENCED_LEADER_EPOCH,
                 KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.OFFSET_NOT_AVAILABLE}

T = TypeVar("T")


def parse_uri(uri: str) -> tuple[str, str]:
    """``kafka://host:port[,host:port]/topic`` -> (bootstrap servers, topic)."""
    rest = uri[len("kafka://"):] if uri.lower().startswith("kafka://") else ""
    hosts, _, topic = rest.partition("/")
    if not hosts or not all(h.strip() for h in hosts.split(",")) or not TOPIC_NAME.fullmatch(topic):
        raise ConfigError(f"source {uri!r}: expected kafka://host:port[,host:port]/topic "
                          "(topic names use letters, digits, '.', '_' and '-')")
    return hosts, topic


class _LibrdkafkaLog:
    """librdkafka's own log lines, at debug level: the errors that matter reach the user as SourceErrors
    that quote the last one, instead of as a stream of retries on stderr. Called from librdkafka's threads."""

    def __init__(self) -> None:
        self.last_error = ""

    def log(self, level: int, message: str, *args: Any) -> None:
        if level <= 3:  # syslog severity: error or worse
            self.last_error = str(args[-1] if args else message)
        log.debug("librdkafka: " + message, *args)


class KafkaSource(Source):
    """Every partition of one topic; ``client_config`` is passed to librdkafka like kcat's -X."""

    no_key_hint = "a Kafka message without a key"
    # A topic is a log that compaction thins to the latest record per key; the fold may do the same.
    latest_only = True

    def __init__(self, uri: str, *, client_config: dict[str, str] | None = None, dataset: str | None = None,
                 group: str | None = None, rebuild: str = REBUILD_MODES[0], timeout: float = KAFKA_TIMEOUT,
                 batch_messages: int = BATCH_MESSAGES, shard: tuple[int, int] | None = None, **_: object) -> None:
        """Options meant for other sources (a key delimiter) are ignored.

        ``shard`` (index, count) reads only that shard's partitions: p with ``p % count == index``, which
        holds exactly the shard's keys when count divides the partition count (format/partition.py)."""
        self.uri = uri
        self.bootstrap, self.topic = parse_uri(uri)
        self.shard = shard
        self.holds_shard = shard is not None
        if rebuild not in REBUILD_MODES:
            raise ConfigError(f"rebuild={rebuild!r}: use one of {', '.join(REBUILD_MODES)}")
        if timeout <= 0:
            raise ConfigError(f"timeout={timeout}: wait above 0 seconds for the brokers")
        settings = dict(client_config or {})
        for name, why in MANAGED.items():
            if name in settings:
                raise ConfigError(f"-X {name} cannot be set: {why}")
        group_setting = settings.pop("group.id", None)
        self.group = group or group_setting or (f"combe-{dataset}" if dataset else None)
        self.rebuild = rebuild
        self.timeout = timeout
        self.batch_messages = batch_messages
        self.read_committed = settings.get("isolation.level", "read_committed") == "read_committed"
        self._last_error = ""
        self._log = _LibrdkafkaLog()
        self._commit_result: list[TopicPartition] | KafkaException | None = None
        self._lag = 0
        common: dict[str, Any] = {**settings, "bootstrap.servers": self.bootstrap, "logger": self._log,
                                  "error_cb": self._on_error}
        consumer = {
            "isolation.level": "read_committed", **common,
            "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "error",
            "on_commit": self._on_commit,
            # The client insists on a group; without one to report to, commit() does nothing.
            "group.id": self.group or "combe",
        }
        try:
            self._consumer = Consumer(consumer)
            self._admin = AdminClient(common)
        except KafkaException as exc:
            raise ConfigError(f"-X settings rejected by the Kafka client: {exc.args[0].str()}") from exc

    # -- callbacks (run inside consume/poll on this thread) ---------------------------------------

    def _on_error(self, error: KafkaError) -> None:
        self._last_error = error.str()
        log.debug("kafka client error: %s", error.str())

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self._commit_result = KafkaException(error) if error is not None else partitions

    # -- the Source contract ----------------------------------------------------------------------

    def describe(self, stream: str, partition: int, offset: int) -> str:
        return f"topic {stream} partition {partition} offset {offset}"

    def lag(self) -> int | None:
        return self._lag

    def rebuild_needed(self, positions: Positions, recorded_at: datetime) -> bool:
        if self.rebuild == "now":
            log.warning("%s: re-reading topic %s from its start (rebuild=now)", self.uri, self.topic)
            return True
        offsets = self._offsets(self._partitions())
        stored = positions.get(self.topic, {})
        if positions and not stored:
            # Folding this topic on top of another's state would keep every key only the other one had.
            problems = [f"the announced version was folded from {', '.join(sorted(positions))}, not from this topic"]
        else:
            problems = _position_problems(stored, offsets) or self._stale(stored, offsets, recorded_at)
        if not problems:
            return False
        message = f"topic {self.topic}: {'; '.join(problems)}"
        if self.rebuild == "auto":
            log.warning("%s; re-reading the topic from its start (rebuild=auto)", message)
            return True
        raise SourceError(f"{message}. Rerun with rebuild=now to re-read the topic from its start and publish the "
                          "difference as an ordinary delta (rebuild=auto does this whenever needed).",
                          source=self.uri)

    def read(self, positions: Positions) -> Iterator[Messages]:
        topic = self.topic
        stored = positions.get(topic, {})
        offsets = self._offsets(self._partitions())
        problems = _position_problems(stored, offsets)
        if problems:
            raise SourceError(f"topic {topic}: {'; '.join(problems)}. Rerun with rebuild=now.", source=self.uri)
        # Partitions without a stored position are new since the announced version: from their beginning.
        where = {p: stored.get(str(p), low) for p, (low, _) in offsets.items()}
        ends = {p: high for p, (_, high) in offsets.items()}
        pending = {p for p in ends if where[p] < ends[p]}
        self._lag = sum(ends[p] - where[p] for p in pending)
        log.info("%s: reading %d messages from %d of %d partitions", self.uri, self._lag, len(pending), len(ends))
        if pending:
            yield from self._fetch(where, ends, pending)
        # Every partition now stands at its start watermark, past any control records or compacted gaps.
        self._lag = 0
        if not stored and self.rebuild == "now":
            self.rebuild = "never"  # the forced re-read is done: later cycles resume from its positions
        yield Messages(topic, [], [], np.zeros(0, np.int64), np.zeros(0, np.int64),
                       {str(p): end for p, end in ends.items()}, sum(ends[p] - where[p] for p in ends))

    def commit(self, positions: Positions) -> None:
        """Commit the announced positions to the group with explicit offsets (never a subscription)."""
        offsets = [TopicPartition(self.topic, int(p), o) for p, o in positions.get(self.topic, {}).items()]
        if not self.group or not offsets:
            return
        self._commit_result = None
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
            # The result arrives through on_commit, served by poll(); nothing is assigned, so poll returns no data.
            deadline = time.monotonic() + self.timeout
            while self._commit_result is None and time.monotonic() < deadline:
                self._consumer.poll(POLL_SECONDS)
        except KafkaException as exc:
            self._commit_result = exc
        result = self._commit_result
        if isinstance(result, list):
            failed = [tp for tp in result if tp.error]
            if not failed:
                return
            why = str(failed[0].error)
        else:
            why = "no answer within the timeout" if result is None else str(result)
        # The version is announced either way: lag monitoring must not fail a publish.
        log.warning("could not commit the published positions to consumer group %s (%s); lag tools will show "
                    "an older position until the next publish", self.group, why)

    def close(self) -> None:
        self._consumer.close()

    # -- reading ----------------------------------------------------------------------------------

    def _fetch(self, where: dict[int, int], ends: dict[int, int], pending: set[int]) -> Iterator[Messages]:
        """Records of ``pending`` partitions from ``where`` up to (not including) ``ends``."""
        topic, consumer = self.topic, self._consumer
        # Offsets below which a partition's messages are folded; set to -1 once a partition is complete,
        # so messages fetched past its end are dropped without a second look-up.
        limit = dict(ends)
        assigned = [TopicPartition(topic, p) for p in sorted(pending)]
        consumer.assign([TopicPartition(topic, p, where[p]) for p in sorted(pending)])
        try:
            idle_since = time.monotonic()
            while pending:
                messages = consumer.consume(self.batch_messages, POLL_SECONDS)
                if not messages:
                    if time.monotonic() - idle_since > self.timeout:
                        raise self._stalled(pending, where, ends)
                    continue
                idle_since = time.monotonic()
                # One C call per field and message, mapped over the batch without a Python frame per message
                # (the method descriptors are called directly): the rest is numpy over the batch.
                before = dict(limit)  # events below may close a partition whose last messages are in this batch
                done: list[int] = []
                flags = list(map(Message.error, messages))
                # By identity: KafkaError's == against None leaves a TypeError pending inside the client.
                if any(map(operator.is_not, flags, repeat(None))):
                    for message, error in zip(messages, flags):
                        if error is not None:
                            self._event(message, limit, done)
                    messages = [m for m, error in zip(messages, flags) if error is None]
                count = len(messages)
                partitions = np.fromiter(map(Message.partition, messages), np.int64, count)
                offsets = np.fromiter(map(Message.offset, messages), np.int64, count)
                # Messages past a partition's end (fetched beyond the watermark) are dropped; a partition whose
                # last message before its end arrived is complete.
                ends_of = np.array([before.get(p, -1) for p in range(int(partitions.max()) + 1)],
                                   np.int64) if len(messages) else np.zeros(0, np.int64)
                end_here = ends_of[partitions] if len(messages) else offsets
                inside = offsets < end_here
                complete = np.unique(partitions[offsets + 1 >= end_here]).tolist() if len(messages) else []
                for p in complete:
                    if limit[p] >= 0:
                        limit[p] = -1
                        done.append(p)
                if not inside.all():
                    kept = np.flatnonzero(inside)
                    messages = [messages[i] for i in kept.tolist()]
                    partitions, offsets = partitions[kept], offsets[kept]
                keys = list(map(Message.key, messages))
                values = list(map(Message.value, messages))
                previous = sum(where.values())
                for tp in consumer.position(assigned):
                    if tp.offset >= 0 and limit[tp.partition] >= 0:
                        where[tp.partition] = tp.offset
                for p in done:
                    where[p] = ends[p]
                    pending.discard(p)
                if done:
                    consumer.pause([TopicPartition(topic, p) for p in done])
                self._lag = sum(ends[p] - where[p] for p in pending)
                yield Messages(topic, keys, values, partitions, offsets,
                               {str(tp.partition): where[tp.partition] for tp in assigned},
                               sum(where.values()) - previous)
        except KafkaException as exc:
            raise SourceError(f"reading topic {topic} at {self.bootstrap} failed: {exc.args[0].str()}",
                              source=self.uri) from exc
        finally:
            # librdkafka keeps a partition paused across unassign and assign: resumed here, or the next read of
            # this source (a daemon's next cycle) would get nothing from the partitions this one finished.
            consumer.resume(assigned)
            consumer.unassign()

    def _event(self, message: Message, limit: dict[int, int], done: list[int]) -> None:
        """An error or end-of-partition event delivered among the messages."""
        error = message.error()
        p = message.partition()
        assert error is not None and p is not None
        if error.code() == KafkaError._PARTITION_EOF:
            # The end under read_committed is the last stable offset: an open transaction does not hold us.
            if limit[p] >= 0 and (message.offset() or 0) >= limit[p]:
                limit[p] = -1
                done.append(p)
            return
        if error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
            raise SourceError(f"topic {self.topic} partition {p}: {error.str()}; the log start moved past the "
                              "position being read (retention or DeleteRecords). Rerun with rebuild=now.",
                              source=self.uri)
        if error.retriable() or error.code() in TRANSIENT:
            log.debug("topic %s partition %s: %s (retrying)", self.topic, p, error.str())
            return
        raise SourceError(f"reading topic {self.topic} partition {p} failed: {error.str()}", source=self.uri)

    def _stalled(self, pending: set[int], where: dict[int, int], ends: dict[int, int]) -> SourceError:
        left = sum(ends[p] - where[p] for p in pending)
        last = f"; last client error: {self._last_error}" if self._last_error else ""
        return SourceError(
            f"no data from Kafka at {self.bootstrap} for {self.timeout:g} s while {left} messages of topic "
            f"{self.topic} (partitions {', '.join(map(str, sorted(pending)))}) were still to be read{last}. "
            "Nothing was published; check the brokers and rerun (the source's timeout sets this wait).",
            source=self.uri)

    # -- metadata -----------------------------------------------------------------------------------

    def _partitions(self) -> list[int]:
        """The topic's partitions, through the consumer: its metadata requests never auto-create a topic."""
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=self.timeout)
        except KafkaException as exc:
            raise self._unreachable(exc) from exc
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            if topic is not None and topic.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise SourceError(f"topic {self.topic} at {self.bootstrap}: {topic.error.str()}", source=self.uri)
            raise SourceError(f"topic {self.topic} does not exist at {self.bootstrap}; check the name in the "
                              "source URL", source=self.uri)
        partitions = sorted(topic.partitions)
        if self.shard is None:
            return partitions
        index, count = self.shard
        if len(partitions) % count:
            # Kafka's partitioner and the shards' then disagree on most keys: no partition holds one shard.
            raise ConfigError(f"topic {self.topic} has {len(partitions)} partitions, which {count} shards do not "
                              f"divide: a shard is the partitions p with p % {count} == its number, so the shard "
                              "count must divide the topic's partition count (publish to a dataset with a shard "
                              "count that does)")
        return [p for p in partitions if p % count == index]

    def _offsets(self, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """partition -> (log start offset, end offset); the end is the last stable offset under read_committed.

        While a partition's leadership moves (a broker restarted, an election is under way) its leader answers
        with an error that goes away: the offsets are asked again, until the source's timeout."""
        isolation = IsolationLevel.READ_COMMITTED if self.read_committed else IsolationLevel.READ_UNCOMMITTED
        deadline = time.monotonic() + self.timeout
        while True:
            found: dict[str, dict[int, int]] = {}
            try:
                for name, spec in (("earliest", OffsetSpec.earliest()), ("latest", OffsetSpec.latest())):
                    try:
                        futures = self._admin.list_offsets({TopicPartition(self.topic, p): spec for p in partitions},
                                                           isolation_level=isolation, request_timeout=self.timeout)
                    except KafkaException as exc:
                        raise self._unreachable(exc) from exc
                    found[name] = {tp.partition: self._result(future).offset for tp, future in futures.items()}
                return {p: (found["earliest"][p], found["latest"][p]) for p in partitions}
            except SourceError as exc:
                cause = exc.__cause__
                moving = isinstance(cause, KafkaException) and cause.args[0].code() in LEADER_MOVING
                if not moving or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)  # the interval of a poll with a deadline

    def _stale(self, stored: dict[str, int], offsets: dict[int, tuple[int, int]], recorded_at: datetime) -> list[str]:
        """Why resuming could miss deletes the log cleaner removed, if it could."""
        if all(stored.get(str(p), low) >= high for p, (low, high) in offsets.items()):
            return []  # nothing was written since: nothing can have been cleaned away
        resource = ConfigResource(ResourceType.TOPIC, self.topic)
        try:
            future = self._admin.describe_configs([resource], request_timeout=self.timeout)[resource]
            config = self._result(future)
        except SourceError as exc:
            log.warning("cannot read the configuration of topic %s (%s); not checking whether deletes were "
                        "cleaned away since the announced version", self.topic, exc)
            return []
        if "compact" not in config["cleanup.policy"].value:
            return []
        retention_ms = int(config["delete.retention.ms"].value)
        age = (datetime.now(timezone.utc) - recorded_at).total_seconds()
        if age * 1000 < retention_ms:
            return []
        return [f"the announced version read up to its positions {_duration(age)} ago, longer than the topic's "
                f"delete.retention.ms ({_duration(retention_ms / 1000)}), so the log cleaner may have removed "
                "deletes (tombstones) written after them"]

    def _result(self, future: Future[T]) -> T:
        try:
            return future.result(timeout=self.timeout + 1)
        except FutureTimeout as exc:
            raise self._unreachable(exc) from exc
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() in TRANSIENT:
                raise self._unreachable(exc) from exc
            raise SourceError(f"topic {self.topic} at {self.bootstrap}: {error.str()}", source=self.uri) from exc

    def _unreachable(self, exc: BaseException) -> SourceError:
        # Log lines and error callbacks wait in the consumer's queue until served; nothing is assigned here,
        # so a poll serves them and returns no data.
        self._consumer.poll(0)
        detail = self._log.last_error or self._last_error or (
            exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else "timed out")
        return SourceError(f"cannot reach Kafka at {self.bootstrap} within {self.timeout:g} s ({detail}); check "
                           "the address and any -X security settings", source=self.uri)


def _position_problems(stored: dict[str, int], offsets: dict[int, tuple[int, int]]) -> list[str]:
    """Why the stored positions cannot be resumed from, for each partition where they cannot."""
    problems = []
    for text, position in sorted(stored.items(), key=lambda item: int(item[0])):
        partition = int(text)
        if partition not in offsets:
            problems.append(f"partition {partition} of the announced version no longer exists "
                            "(was the topic deleted and re-created?)")
            continue
        low, high = offsets[partition]
        if position < low:
            problems.append(f"partition {partition} now starts at offset {low}, past the announced position "
                            f"{position}: the records in between were deleted")
        elif position > high:
            problems.append(f"partition {partition} ends at offset {high}, before the announced position "
                            f"{position} (was the topic deleted and re-created?)")
    return problems


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
