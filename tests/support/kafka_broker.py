"""A real single-node Apache Kafka broker (KRaft, broker+controller) for integration tests.

combe's guarantees depend on broker behaviour that fakes do not reproduce (log compaction,
tombstones, transactions and read_committed), so the tests run the genuine broker: its jars
come from Maven Central (see kafka/pom.xml) and it runs as a plain `java` subprocess bound to
127.0.0.1 on free ports, with its data in a temporary directory.

Pre-fetch the jars (e.g. from an install script) with::

    python -m tests.support.kafka_broker fetch

Fetching needs only the standard library (confluent-kafka is imported where the broker is
talked to), so `make test` fetches while the packages are still installing.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.service import Service, file_lock, terminate

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

POM = Path(__file__).parent / "kafka" / "pom.xml"

# Entry points inside kafka_2.13-<version>.jar (what kafka-storage.sh / kafka-server-start.sh run).
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
SERVER_CLASS = "kafka.Kafka"

# Small heap and C1-only JIT: the test machines have 2 cores and the broker's load is tiny,
# so start-up time matters more than peak throughput.
JVM_OPTS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")

# Topic settings that make the log cleaner act within a second or two instead of hours:
# segments roll after 100 ms or 1 MiB (the smallest segment.bytes Kafka 4 accepts; the active
# segment is never compacted), any dirty data is worth cleaning, and tombstones may be dropped
# 100 ms after the cleaner has passed over them.
COMPACTED_TOPIC_CONFIG: Mapping[str, str] = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "segment.bytes": str(1024 * 1024),
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "100",
    "file.delete.delay.ms": "100",
}

LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
"""


class KafkaBrokerError(RuntimeError):
    """The broker (or fetching its jars) failed; the message carries the relevant output."""


def kafka_version() -> str:
    """The Kafka version pinned in kafka/pom.xml, the single place it is written down."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(POM).findtext("m:properties/m:kafka.version", namespaces=ns)
    if not version:
        raise KafkaBrokerError(f"no <kafka.version> property in {POM}")
    return version


def cache_dir() -> Path:
    """Per-version jar cache that survives across test runs (jars are ~45 MB)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "combe-test" / f"kafka-{kafka_version()}"


def ensure_jars() -> Path:
    """Return the directory of the broker's runtime jars, fetching them with Maven if needed.

    The copy is complete only once a marker holding the pom's hash is written, so an
    interrupted fetch or an edited pom triggers a fresh copy.
    """
    root = cache_dir()
    libs = root / "libs"
    marker = root / "complete"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / "lock"):  # one fetch, whichever test process asks first
        if marker.is_file() and marker.read_text() == digest:
            return libs
        marker.unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)
        command = [
            "mvn", "-q", "-B", "-f", str(POM),
            "dependency:copy-dependencies", f"-DoutputDirectory={libs}",
        ]  # fmt: skip
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            raise KafkaBrokerError("Maven ('mvn') is needed to fetch the Kafka jars") from exc
        if result.returncode != 0:
            raise KafkaBrokerError(
                f"fetching Kafka jars failed ({' '.join(command)} exited {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        marker.write_text(digest)
    return libs


def _free_ports(count: int) -> list[int]:
    """Ports the OS considers free right now; all sockets stay open until all are picked."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _random_cluster_id() -> str:
    """A Kafka Uuid in its base64 form; one starting with '-' would be parsed as a CLI flag."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    return str(Path(java_home) / "bin" / "java") if java_home else "java"


class KafkaBroker(Service):
    """One Kafka broker+controller process on 127.0.0.1: a context manager, or start()/stop().

    The data directory lives as long as the object is started, so kill() followed by restart()
    behaves like a crashed and recovered broker with its data intact. attach() gives another process a
    broker that one started (tests/support/shared.py): it talks to the broker but never stops it.
    """

    def __init__(self, startup_timeout: float = 60.0) -> None:
        self.startup_timeout = startup_timeout
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._libs: Path | None = None
        self._port = 0
        self._attached = False

    @classmethod
    def attach(cls, handle: dict[str, Any]) -> KafkaBroker:
        """The broker another process started and described with handle()."""
        broker = cls()
        broker._port, broker._dir, broker._attached = handle["port"], Path(handle["files"][0]), True
        return broker

    def handle(self) -> dict[str, Any]:
        if self._process is None or self._dir is None:
            raise KafkaBrokerError("broker not started")
        return {"pid": self._process.pid, "port": self._port, "files": [str(self._dir)]}

    @property
    def bootstrap(self) -> str:
        """bootstrap.servers value for clients, e.g. "127.0.0.1:40123"."""
        if not self._port:
            raise KafkaBrokerError("broker not started")
        return f"127.0.0.1:{self._port}"

    @property
    def log_path(self) -> Path:
        """The broker's combined stdout/stderr (log4j at INFO), useful when a test fails."""
        if self._dir is None:
            raise KafkaBrokerError("broker not started")
        return self._dir / "broker.log"

    def start(self) -> None:
        """Format fresh storage, launch the broker and wait until it serves metadata."""
        if self._dir is not None:
            raise KafkaBrokerError("broker already started")
        self._libs = ensure_jars()
        self._dir = Path(tempfile.mkdtemp(prefix="combe-kafka-"))
        try:
            self._port, controller_port = _free_ports(2)
            self._write_config(controller_port)
            self._format_storage()
            self._launch()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Shut down gracefully (SIGTERM, SIGKILL after 30 s) and delete all broker data."""
        self._own("stopped")
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
        self._port = 0

    def kill(self) -> None:
        """SIGKILL the broker, as in a crash; data is kept so restart() can recover it."""
        self._own("killed")
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def restart(self) -> None:
        """Stop the broker if it runs and start it again on the same ports and data."""
        if self._dir is None:
            raise KafkaBrokerError("broker not started")
        self._own("restarted")
        self._terminate()
        self._launch()
        self._wait_ready()

    def _own(self, what: str) -> None:
        if self._attached:
            raise KafkaBrokerError(f"a shared broker cannot be {what}: other tests use it; start a KafkaBroker "
                                   "of your own")

    def admin(self) -> AdminClient:
        """An AdminClient connected to this broker."""
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(
        self,
        name: str,
        partitions: int = 3,
        compact: bool = True,
        config: Mapping[str, str] | None = None,
    ) -> None:
        """Create a topic on this broker: see create_topic()."""
        create_topic(self.bootstrap, name, partitions, compact, config)

    def _write_config(self, controller_port: int) -> None:
        assert self._dir is not None
        settings = {
            "node.id": "1",
            "process.roles": "broker,controller",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self._port},CONTROLLER://127.0.0.1:{controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self._port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
            "log.dirs": str(self._dir / "data"),
            # One replica of the internal topics behind groups and transactions (their default
            # of 3 makes consumers and init_transactions hang), one partition so that they are
            # created quickly on first use.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After kill() the controller refuses the restarted broker's registration until the
            # dead incarnation's session expires: 3 s instead of 9 s.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            # Let the cleaner look for work every 100 ms rather than every 15 s, and keep its
            # default 128 MB dedupe buffer from eating a quarter of the heap.
            "log.cleaner.backoff.ms": "100",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        }
        config = "".join(f"{key}={value}\n" for key, value in settings.items())
        (self._dir / "server.properties").write_text(config)
        (self._dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)

    def _java_command(self, main_class: str, *args: str) -> list[str]:
        assert self._dir is not None and self._libs is not None
        return [
            _java(),
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self._dir / 'log4j2.properties'}",
            "-cp",
            f"{self._libs}/*",
            main_class,
            *args,
        ]

    def _format_storage(self) -> None:
        """Write meta.properties and the bootstrap metadata; --standalone makes this node the
        sole voter of a dynamic (KIP-853) quorum, matching controller.quorum.bootstrap.servers."""
        assert self._dir is not None
        command = self._java_command(
            STORAGE_TOOL_CLASS,
            "format",
            "--config", str(self._dir / "server.properties"),
            "--cluster-id", _random_cluster_id(),
            "--standalone",
        )  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise KafkaBrokerError(
                f"{STORAGE_TOOL_CLASS} format exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )

    def _launch(self) -> None:
        # Same process group as the test run on purpose: Ctrl-C in a terminal stops the broker too.
        assert self._dir is not None
        command = self._java_command(SERVER_CLASS, str(self._dir / "server.properties"))
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def _terminate(self) -> None:
        process, self._process = self._process, None
        terminate(process)

    def _wait_ready(self) -> None:
        """Wait until the broker answers a metadata request listing itself.

        Polls the TCP port first so the Kafka client doesn't log a connection error per attempt.
        """
        from confluent_kafka import KafkaException

        process = self._process
        assert process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise KafkaBrokerError(
                    f"Kafka broker exited with {process.returncode}:\n{self._log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self._port), timeout=1):
                    pass
                remaining = max(deadline - time.monotonic(), 0.1)
                metadata = self.admin().list_topics(timeout=min(5.0, remaining))
            except (OSError, KafkaException):
                time.sleep(0.2)
                continue
            if metadata.brokers:
                return
        raise KafkaBrokerError(
            f"Kafka broker not ready after {self.startup_timeout:.0f} s; "
            f"log tail:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 3,
    compact: bool = True,
    config: Mapping[str, str] | None = None,
) -> None:
    """Create a topic and wait until every partition has a leader.

    Compacted topics get COMPACTED_TOPIC_CONFIG so the cleaner really runs during a test;
    `config` entries override it.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    settings = {**(COMPACTED_TOPIC_CONFIG if compact else {}), **(config or {})}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new_topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=settings)
    admin.create_topics([new_topic], operation_timeout=30)[name].result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topic = admin.list_topics(topic=name, timeout=10).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 and p.error is None for p in topic.partitions.values())
        ):
            return
        time.sleep(0.1)
    raise KafkaBrokerError(f"topic {name!r} has no leaders after 30 s")


def main() -> None:
    """CLI: `fetch` pre-downloads the broker jars so the first test run needs no network."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.kafka_broker", description=main.__doc__
    )
    parser.add_argument("command", choices=["fetch"])
    parser.parse_args()
    libs = cache_dir() / "libs"
    print(f"Fetching Kafka {kafka_version()} broker jars into {libs} with Maven", flush=True)
    ensure_jars()


if __name__ == "__main__":
    main()
