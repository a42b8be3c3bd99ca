"""The Store contract, run against every implementation (memory, local files, S3 on moto's
server), plus what only S3 has: conditional polls, retries, and bounded failure."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from combe.format.errors import ConfigError, ObjectNotFound, StoreError, StoreUnavailable
from combe.format.store import Store, open_store
from tests.support.fault_proxy import FaultProxy
from tests.support.s3_server import BUCKET, S3Server

RACERS = 16

T = TypeVar("T")


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each kind; the S3 server starts only if an S3 test runs."""
    if request.param == "memory":
        memory = open_store(f"memory://combe-tests/{uuid.uuid4().hex}")
        yield memory
        fs, root = memory.fs, memory.root  # type: ignore[attr-defined]
        if fs.exists(root):  # the memory filesystem is process-wide: leave it as found
            fs.rm(root, recursive=True)
    elif request.param == "local":
        yield open_store(str(tmp_path / "store"))
    else:
        yield request.getfixturevalue("s3_store_factory")()


def race(count: int, attempt: Callable[[int], T]) -> list[T]:
    """Run ``attempt(i)`` in ``count`` threads released together; their results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(i)
        except BaseException as exc:  # noqa: BLE001 - surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


# -- the contract, for every store ---------------------------------------------


def test_read_of_missing_object_raises_object_not_found(store: Store) -> None:
    with pytest.raises(ObjectNotFound):
        store.read("missing.json")
    with pytest.raises(LookupError):
        store.read_tagged("versions/missing.json")
    assert not store.exists("missing.json")


def test_write_then_read_round_trips(store: Store) -> None:
    store.write("blobs/a.bin", b"\x00\x01binary\xff")
    store.write("empty", b"")
    assert store.read("blobs/a.bin") == b"\x00\x01binary\xff"
    assert store.read("empty") == b""
    store.write("blobs/a.bin", b"replaced")
    assert store.read("blobs/a.bin") == b"replaced"
    assert store.exists("blobs/a.bin")


def test_put_if_absent_creates_once_and_keeps_the_first(store: Store) -> None:
    assert store.put_if_absent("versions/1.json", b"first") is True
    assert store.put_if_absent("versions/1.json", b"second") is False
    assert store.read("versions/1.json") == b"first"


def test_compare_and_swap(store: Store) -> None:
    first = store.compare_and_swap("announced.json", b"v1", None)
    assert first is not None
    assert store.read_tagged("announced.json") == (b"v1", first)
    assert store.compare_and_swap("announced.json", b"again", None) is None

    second = store.compare_and_swap("announced.json", b"v2", first)
    assert second is not None and second != first
    assert store.read_tagged("announced.json") == (b"v2", second)

    assert store.compare_and_swap("announced.json", b"stale", first) is None
    assert store.read("announced.json") == b"v2"


def test_compare_and_swap_on_a_missing_object_with_a_tag_fails(store: Store) -> None:
    store.write("elsewhere", b"x")
    _, tag = store.read_tagged("elsewhere")
    assert store.compare_and_swap("announced.json", b"v1", tag) is None
    assert not store.exists("announced.json")


def test_read_if_changed(store: Store) -> None:
    store.write("announced.json", b"v1")
    data, tag = store.read_tagged("announced.json")
    assert store.read_if_changed("announced.json", tag) is None
    assert store.read_if_changed("announced.json", None) == (data, tag)

    store.write("announced.json", b"v2")
    changed = store.read_if_changed("announced.json", tag)
    assert changed is not None and changed[0] == b"v2"
    assert changed == store.read_tagged("announced.json")
    assert store.read_if_changed("announced.json", changed[1]) is None


def test_list_gives_direct_children_with_sizes(store: Store) -> None:
    store.write("versions/000000000002.json", b"two!!")
    store.write("versions/000000000001.json", b"one")
    store.write("versions/deeper/x.json", b"not listed")
    store.write("blobs/b.arrow", b"elsewhere")

    listed = store.list("versions/")
    assert [(info.path, info.size) for info in listed] == [
        ("versions/000000000001.json", 3),
        ("versions/000000000002.json", 5),
    ]
    for info in listed:
        assert info.modified is None or (isinstance(info.modified, datetime) and info.modified.tzinfo)
    assert store.list("nothing-here/") == []


def test_delete_is_idempotent(store: Store) -> None:
    store.write("blobs/a.bin", b"x")
    store.delete("blobs/a.bin")
    assert not store.exists("blobs/a.bin")
    store.delete("blobs/a.bin")
    store.delete("never/existed")


def test_child_is_rooted_one_folder_deeper(store: Store) -> None:
    dataset = store.child("orders")
    dataset.write("versions/1.json", b"manifest")
    assert store.read("orders/versions/1.json") == b"manifest"
    assert [info.path for info in dataset.list("versions/")] == ["versions/1.json"]
    assert dataset.child("versions").read("1.json") == b"manifest"
    assert dataset.url.rstrip("/").endswith("orders")


def test_racing_put_if_absent_has_exactly_one_winner(store: Store) -> None:
    results = race(RACERS, lambda i: store.put_if_absent("versions/7.json", f"writer {i}".encode()))
    assert results.count(True) == 1
    assert store.read("versions/7.json") == f"writer {results.index(True)}".encode()


def test_racing_compare_and_swap_from_one_tag_has_exactly_one_winner(store: Store) -> None:
    store.write("announced.json", b"v1")
    _, tag = store.read_tagged("announced.json")
    results = race(RACERS, lambda i: store.compare_and_swap("announced.json", f"writer {i}".encode(), tag))
    winners = [i for i, new_tag in enumerate(results) if new_tag is not None]
    assert len(winners) == 1
    assert store.read_tagged("announced.json") == (f"writer {winners[0]}".encode(), results[winners[0]])


# -- S3 only ---------------------------------------------------------------------

def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _unanswered_port() -> Iterator[int]:
    """A port whose connection attempts go unanswered, like a firewalled host's.

    The listener never accepts and its backlog is full, so the kernel drops further SYNs.
    """
    with socket.socket() as listener, ExitStack() as fillers:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(4):
            filler = fillers.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        yield port


@pytest.mark.s3
def test_unchanged_poll_is_one_get_without_a_body(
    s3_store_factory: Callable[..., Store], fault_proxy: FaultProxy
) -> None:
    store = s3_store_factory(fault_proxy.url)
    store.write("announced.json", b"v1" * 1000)
    _, tag = store.read_tagged("announced.json")
    fault_proxy.clear()

    assert store.read_if_changed("announced.json", tag) is None
    [exchange] = fault_proxy.exchanges()
    assert (exchange.method, exchange.status, exchange.body_bytes) == ("GET", 304, 0)
    assert exchange.path.endswith("/announced.json")


@pytest.mark.s3
def test_throttling_and_server_errors_are_retried(
    s3_store_factory: Callable[..., Store], fault_proxy: FaultProxy
) -> None:
    store = s3_store_factory(fault_proxy.url)
    store.write("blobs/a.bin", b"payload")
    fault_proxy.clear()

    fault_proxy.fail(503, times=2)
    assert store.read("blobs/a.bin") == b"payload"
    assert [e.status for e in fault_proxy.exchanges("GET")] == [503, 503, 200]

    fault_proxy.fail(500, times=1)
    assert store.put_if_absent("versions/1.json", b"manifest") is True
    assert store.read("versions/1.json") == b"manifest"


@pytest.mark.s3
def test_slow_answers_time_out_and_are_retried(
    s3_store_factory: Callable[..., Store], fault_proxy: FaultProxy
) -> None:
    store = s3_store_factory(fault_proxy.url, config_kwargs={"read_timeout": 1})
    store.write("blobs/a.bin", b"payload")
    fault_proxy.clear()

    fault_proxy.delay(3, times=1)
    started = time.monotonic()
    assert store.read("blobs/a.bin") == b"payload"
    assert time.monotonic() - started < 3
    assert fault_proxy.count("GET") == 2


@pytest.mark.s3
def test_conditional_write_whose_answer_was_lost_still_counts_as_won(
    s3_store_factory: Callable[..., Store], fault_proxy: FaultProxy
) -> None:
    """S3 applied the first attempt but the answer never arrived; the retry meets our own object."""
    store = s3_store_factory(fault_proxy.url)
    fault_proxy.drop(times=1, after_relay=True)
    assert store.put_if_absent("versions/1.json", b"mine") is True

    _, tag = store.read_tagged("versions/1.json")
    fault_proxy.drop(times=1, after_relay=True)
    new_tag = store.compare_and_swap("versions/1.json", b"mine too", tag)
    assert new_tag is not None
    assert store.read_tagged("versions/1.json") == (b"mine too", new_tag)

    # Whereas a retry that meets someone else's object has lost.
    fault_proxy.drop(times=1)
    assert store.put_if_absent("versions/1.json", b"not mine") is False


@pytest.mark.s3
def test_dropped_connections_fail_with_store_unavailable_in_bounded_time(
    s3_store_factory: Callable[..., Store], fault_proxy: FaultProxy
) -> None:
    from combe.format.store_s3 import DEFAULT_RETRY_DEADLINE  # s3fs and aiohttp: loaded by S3 tests alone

    store = s3_store_factory(fault_proxy.url)
    store.write("blobs/a.bin", b"payload")
    fault_proxy.drop()

    for operation in (lambda: store.read("blobs/a.bin"), lambda: store.put_if_absent("v", b"x")):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            operation()
        assert time.monotonic() - started < DEFAULT_RETRY_DEADLINE
        assert store.url in str(raised.value) and fault_proxy.url in str(raised.value)
    assert fault_proxy.count() >= 2


@pytest.mark.s3
def test_endpoint_with_nothing_listening_fails_with_store_unavailable_in_bounded_time(
    s3_store_factory: Callable[..., Store],
) -> None:
    from combe.format.store_s3 import DEFAULT_RETRY_DEADLINE

    store = s3_store_factory(f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="gave up after"):
        store.read("announced.json")
    assert time.monotonic() - started < DEFAULT_RETRY_DEADLINE


@pytest.mark.s3
def test_endpoint_that_never_answers_connections_fails_within_the_timeouts(
    s3_store_factory: Callable[..., Store],
) -> None:
    with _unanswered_port() as port:
        store = s3_store_factory(
            f"http://127.0.0.1:{port}", retry_deadline=2, config_kwargs={"connect_timeout": 1}
        )
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="ConnectTimeoutError"):
            store.read("announced.json")
        assert time.monotonic() - started < 2 + 1 + 1


@pytest.mark.s3
def test_missing_bucket_is_a_store_error_not_a_missing_object(s3_server: S3Server) -> None:
    store = open_store("s3://no-such-bucket/prefix", s3_server.storage_options())
    with pytest.raises(StoreError, match="does not exist") as raised:
        store.read("announced.json")
    assert not isinstance(raised.value, ObjectNotFound)


@pytest.mark.s3
def test_endpoint_and_credentials_come_from_the_standard_environment(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_ENDPOINT_URL is honoured by botocore itself: no endpoint in the storage options."""
    s3_server.make_bucket(BUCKET)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    # A filesystem of its own, so none cached with another environment is reused.
    store = open_store(f"s3a://{BUCKET}/{uuid.uuid4().hex}", {"skip_instance_cache": True})
    assert store.put_if_absent("versions/1.json", b"manifest") is True
    assert store.read("versions/1.json") == b"manifest"


def test_s3_url_without_bucket_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bucket"):
        open_store("s3://")


# -- local only ------------------------------------------------------------------


# The commands run in a process of their own, started with the umask (the umask is the process's); make check
# tries the common one, make test all three.
UMASK_COMMANDS = """
import sys
from combe.cli import main
store, changelog = sys.argv[1:3]
# A first version (snapshot), a run that finds nothing new, then a pin: announced.json rewritten by compare-and-swap.
for command in (["publish", "--source", changelog, "--store", store, "--dataset", "movies", "--once"],) * 2 + (
        ["pin", "--store", store, "--dataset", "movies", "1"],):
    code = main(command)
    assert code == 0, (command, code)
"""


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), pytest.param(0o002, 0o664, marks=pytest.mark.slow),
                                         pytest.param(0o077, 0o600, marks=pytest.mark.slow)])
def test_local_stores_create_files_as_the_umask_says(tmp_path: Path, umask: int, mode: int) -> None:
    """A consumer running as another user (or group) reads what the producer's umask lets it read."""
    changelog = tmp_path / "movies.jsonl"
    changelog.write_text('{"key": "a", "value": {"n": 1}}\n')
    store = tmp_path / "store"
    done = subprocess.run([sys.executable, "-c", UMASK_COMMANDS, str(store), str(changelog)], umask=umask,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    files = [p for p in (store / "movies").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    kinds = {p.relative_to(store / "movies").parts[0] for p in files}
    assert kinds == {"announced.json", "versions", "blobs"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: mode for p in files}
