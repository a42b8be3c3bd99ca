"""combe on S3, against moto's server over HTTP: publish, inspect, get and consume through ``s3://``,
the endpoint from AWS_ENDPOINT_URL, cheap polls, read-only fsspec protocols, and two producer
processes racing on one dataset round after round."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from combe.cli import EXIT_CONFLICT, EXIT_FAILURE, main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.errors import UnsupportedStore
from combe.producer import Publisher, open_source
from tests.support.changelog import Change, append_jsonl, replay
from tests.support.fault_proxy import FaultProxy
from tests.support.feed import Feed, view_state
from tests.support.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

DATASET = "movies"
RACE_BUCKET = "combe-race"  # versioned: every write of announced.json is kept, to check the announcement history
PUBLISHER_ROUNDS = 12
CLI_ROUNDS = 3


def movies(count: int) -> list[Change]:
    return [(f"m{i:03d}", {"title": f"Movie {i}", "year": 1990 + i % 30}) for i in range(count)]


@pytest.fixture
def aws_credentials(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and region the standard AWS way; the endpoint is left to each test."""
    for name, value in s3_server.env().items():
        if name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.s3
def test_publish_inspect_get_and_consume_through_s3(
    s3_server: S3Server, s3_url: str, aws_credentials: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changelog = tmp_path / "movies.jsonl"
    first = movies(50)
    append_jsonl(changelog, first)
    store = ["--store", s3_url, "--dataset", DATASET, "--storage-option", f"endpoint_url={s3_server.endpoint_url}"]
    assert main(["publish", "--source", str(changelog), *store, "--once"]) == 0

    with Consumer(s3_url, DATASET, storage_options=s3_server.storage_options()) as consumer:
        assert consumer.version == 1 and view_state(consumer.view()) == replay(first)
        second: list[Change] = [("m001", {"title": "Movie 1 (remastered)", "year": 2001}), ("m002", None),
                                ("m050", {"title": "Movie 50", "year": 2020})]
        append_jsonl(changelog, second)
        assert main(["publish", "--source", str(changelog), *store, "--once"]) == 0
        assert consumer.refresh() is True
        assert consumer.version == 2 and view_state(consumer.view()) == replay(first + second)
        assert "delta" in (consumer.last_plan or "")

    capsys.readouterr()
    assert main(["inspect", *store, "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert (described["store"], described["announced"]) == (f"{s3_url}/{DATASET}", 2)
    assert [v["version"] for v in described["versions"]] == [1, 2]
    assert main(["get", *store, "m001", "m002"]) == 0
    found, missing = capsys.readouterr().out.splitlines()
    assert json.loads(found) == {"key": "m001", "title": "Movie 1 (remastered)", "year": 2001}
    assert missing == "null"
    # Nothing to publish: a no-op run announces nothing.
    assert main(["publish", "--source", str(changelog), *store, "--once"]) == 0
    assert Dataset.open(s3_url, DATASET, s3_server.storage_options()).versions() == [1, 2]


@pytest.mark.s3
def test_endpoint_and_credentials_from_the_environment(s3_server: S3Server, s3_url: str, tmp_path: Path) -> None:
    """AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...: no --storage-option at all, as against AWS itself."""
    changelog = tmp_path / "movies.jsonl"
    append_jsonl(changelog, movies(5))
    env = {**os.environ, **s3_server.env()}
    store = ["--store", s3_url, "--dataset", DATASET]

    def combe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "combe", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    published = combe("publish", "--source", str(changelog), *store, "--once")
    assert published.returncode == 0, published.stderr
    assert "published version 1" in published.stdout
    got = combe("get", *store, "m003")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"key": "m003", "title": "Movie 3", "year": 1993}


@pytest.mark.s3
def test_a_poll_without_a_new_version_is_one_conditional_get_without_a_body(
    s3_server: S3Server, s3_url: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    feed = Feed(tmp_path, store=s3_url, storage_options=s3_server.storage_options())
    feed.publish(movies(200))
    with feed.consumer(storage_options=s3_server.storage_options(fault_proxy.url)) as consumer:
        fault_proxy.clear()
        assert [consumer.refresh() for _ in range(3)] == [False] * 3
        polls = fault_proxy.exchanges()
        assert [(e.method, e.status, e.body_bytes) for e in polls] == [("GET", 304, 0)] * 3
        assert all(e.path.endswith(f"/{DATASET}/announced.json") for e in polls)

        # A new version costs the announcement, its manifest and its delta: nothing else.
        feed.publish([("m001", {"title": "Movie 1 (remastered)", "year": 2001})])
        fault_proxy.clear()
        assert consumer.refresh() is True
        fetched = [(e.method, e.status, e.path.rsplit("/", 2)[-2]) for e in fault_proxy.exchanges()]
        assert fetched == [("GET", 200, DATASET), ("GET", 200, "versions"), ("GET", 200, "blobs")]
        assert "/blobs/delta-1-2-" in fault_proxy.exchanges()[-1].path
        assert view_state(consumer.view()) == feed.states[2]


# -- protocols without atomic writes -------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_store(tmp_path: Path) -> Iterator[tuple[Feed, str]]:
    """A dataset published to a local store, served read-only over HTTP (as a CDN or a web server would)."""
    feed = Feed(tmp_path)
    feed.publish(movies(20))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=feed.store))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield feed, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("protocol", ["http", "chained"])
def test_other_fsspec_protocols_are_read_only(
    http_store: tuple[Feed, str], protocol: str, capsys: pytest.CaptureFixture[str]
) -> None:
    feed, http_url = http_store
    url = http_url if protocol == "http" else f"simplecache::file://{feed.store}"
    with Consumer(url, DATASET) as consumer:
        assert view_state(consumer.view()) == feed.states[1]
    assert Dataset.open(url, DATASET).versions() == [1]

    append_jsonl(feed.path, [("m001", None)])
    stored = sorted(p.relative_to(feed.store) for p in Path(feed.store).rglob("*"))
    capsys.readouterr()
    code = main(["publish", "--source", str(feed.path), "--store", url, "--dataset", DATASET, "--once"])
    assert code == EXIT_FAILURE
    error = capsys.readouterr().err
    assert f"{url}/{DATASET} cannot be published to: its protocol offers no atomic create-only write and " \
           "compare-and-swap, so two producers could overwrite each other" in error
    assert "Traceback" not in error
    with pytest.raises(UnsupportedStore, match="Publish to a local path, memory:// or s3://"):
        Publisher(Dataset.open(url, DATASET), open_source(str(feed.path)))
    assert sorted(p.relative_to(feed.store) for p in Path(feed.store).rglob("*")) == stored


# -- two producers racing -----------------------------------------------------------------------

# One producer process, as a daemon runs it: one Publisher kept across cycles, a lost race
# reported and followed by the next cycle. Each round it appends a few changes to its own
# changelog (so both producers always have something to publish, on keys they share), waits
# for the other producer to arrive, and runs a cycle.
RACER = r"""
import json, random, sys, time
from pathlib import Path
from combe.format.dataset import Dataset
from combe.format.errors import ConflictError
from combe.producer import PublishOptions, Publisher, open_source
from combe.producer.validators import Limits

store, name, me, changelog, barrier, rounds, options = sys.argv[1:8]
rng = random.Random(me)
Path(changelog).touch()
publisher = Publisher(Dataset.open(store, name, json.loads(options)), open_source(changelog),
                      PublishOptions(producer_id=me, limits=Limits(max_removed=None)))
for r in range(int(rounds)):
    with open(changelog, "a") as out:
        for _ in range(3):
            value = None if r and rng.random() < 0.2 else {"by": me, "round": r, "n": rng.randrange(1000)}
            out.write(json.dumps({"key": f"k{rng.randrange(30):02d}", "value": value}) + "\n")
    Path(barrier, f"{r}-{me}").touch()
    deadline = time.monotonic() + 30
    while len(list(Path(barrier).glob(f"{r}-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(rng.random() * 0.05)  # so that the winner of the last round is not always ahead
    try:
        result = publisher.run_cycle()
        report = {"outcome": result.outcome, "version": result.version}
    except ConflictError as exc:
        report = {"outcome": "conflict", "version": exc.version, "message": str(exc)}
    print(json.dumps({"round": r, "producer": me, **report}), flush=True)
"""

# A validator for `combe publish --once` runs that holds each run until both have folded, so that
# both build on the same announced version and race for the same version number.
BARRIER = """
import os, time
from pathlib import Path

def both_arrived(context):
    folder = Path(os.environ["COMBE_TEST_BARRIER"])
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 30
    while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
"""


@pytest.fixture(scope="module")
def race_bucket(s3_server: S3Server) -> str:
    client = _client(s3_server)
    client.create_bucket(Bucket=RACE_BUCKET)
    client.put_bucket_versioning(Bucket=RACE_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    client.close()
    return RACE_BUCKET


def _client(s3_server: S3Server) -> Any:
    import boto3  # here: every worker collects this module, and make check runs none of its tests

    return boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name=REGION)


def announcement_history(s3_server: S3Server, bucket: str, prefix: str) -> list[int]:
    """Every version announced.json ever named, oldest first (the bucket keeps each write)."""
    client = _client(s3_server)
    key = f"{prefix}/{DATASET}/announced.json"
    try:
        listed = client.list_object_versions(Bucket=bucket, Prefix=key)
        assert not listed.get("IsTruncated")
        writes = [v["VersionId"] for v in listed.get("Versions", []) if v["Key"] == key]
        return [json.loads(client.get_object(Bucket=bucket, Key=key, VersionId=w)["Body"].read())["version"]
                for w in reversed(writes)]  # S3 lists the newest first
    finally:
        client.close()


def changes_between(path: Path, start: int, end: int) -> list[Change]:
    """The changelog lines a version folded: from the byte position its parent recorded to its own."""
    with open(path, "rb") as handle:
        handle.seek(start)
        lines = handle.read(end - start).splitlines()
    return [(line["key"], line["value"]) for line in map(json.loads, lines)]


def check_race(s3_server: S3Server, url: str, prefix: str) -> int:
    """The invariants of racing producers; returns the announced version.

    Versions are contiguous and all announced, each exactly once and in order; each version folded
    one producer's changelog from where its parent stood; and every version's content equals the
    replay of exactly the changes the manifests say were folded, in version order.
    """
    options = s3_server.storage_options()
    dataset = Dataset.open(url, DATASET, options)
    announced = dataset.announced().version
    assert announced is not None
    versions = list(range(1, announced + 1))
    assert dataset.versions() == versions  # none skipped, none left unannounced
    assert announcement_history(s3_server, RACE_BUCKET, prefix) == versions  # none announced twice
    manifests = [dataset.manifest(v) for v in versions]
    assert [m.parent for m in manifests] == [None, *versions[:-1]]

    expected: dict[int, dict[Any, str]] = {}
    state: dict[Any, str] = {}
    before: dict[str, dict[str, int]] = {}
    for manifest in manifests:
        advanced = [s for s in manifest.positions if manifest.positions[s] != before.get(s)]
        assert len(advanced) == 1, (manifest.version, manifest.positions, before)
        stream = advanced[0]
        state = replay(changes_between(Path(stream), before.get(stream, {}).get("0", 0),
                                       manifest.positions[stream]["0"]), state)
        expected[manifest.version] = state
        before = manifest.positions
    with Consumer(url, DATASET, pin=1, storage_options=options) as consumer:
        for version in versions:
            if version > 1:
                consumer.set_pin(version)
            assert view_state(consumer.view()) == expected[version], version
    return announced


@pytest.mark.s3
def test_two_producer_processes_racing_round_after_round(
    s3_server: S3Server, race_bucket: str, tmp_path: Path
) -> None:
    prefix = uuid.uuid4().hex
    url = f"s3://{race_bucket}/{prefix}"
    (tmp_path / "barrier").mkdir()
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, url, DATASET, name, str(tmp_path / f"{name}.jsonl"),
             str(tmp_path / "barrier"), str(PUBLISHER_ROUNDS), json.dumps(s3_server.storage_options())],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("producer-a", "producer-b")
    ]
    reports = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        reports += [json.loads(line) for line in out.splitlines()]
    assert len(reports) == 2 * PUBLISHER_ROUNDS

    announced = check_race(s3_server, url, prefix)
    dataset = Dataset.open(url, DATASET, s3_server.storage_options())
    # Each version was published by exactly the producer its manifest names; the other one either
    # lost that round (announcing nothing), or found it written and announced it for it (adopted).
    published = sorted((r["version"], r["producer"]) for r in reports if r["outcome"] == "published")
    assert published == [(v, dataset.manifest(v).producer) for v in range(1, announced + 1)]
    conflicts = [r for r in reports if r["outcome"] == "conflict"]
    assert conflicts, "the producers never raced; the test proves nothing"
    for lost in conflicts:
        assert dataset.manifest(lost["version"]).producer != lost["producer"]
        assert "nothing was announced by this one" in lost["message"]
    # A producer that lost carried on from the winner's state: its next round built on the version it lost
    # (or a later one), never on its own older state. (That both won a round is likely but not certain: one
    # process may be the faster one every round.)
    rounds = {(r["producer"], r["round"]): r for r in reports}
    for lost in conflicts:
        after = rounds.get((lost["producer"], lost["round"] + 1))
        if after is not None:
            assert after["version"] > lost["version"] or (
                after["outcome"] == "noop" and after["version"] == lost["version"]), (lost, after)


@pytest.mark.s3
def test_two_publish_once_runs_racing_round_after_round(
    s3_server: S3Server, race_bucket: str, tmp_path: Path
) -> None:
    """Cron runs of `combe publish --once` that overlap: one publishes, the other exits 4 and says why."""
    prefix = uuid.uuid4().hex
    url = f"s3://{race_bucket}/{prefix}"
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "barrier.py").write_text(BARRIER)
    changelogs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    env = {**os.environ, **s3_server.env(),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "checks"), os.environ.get("PYTHONPATH")]))}
    for round_ in range(CLI_ROUNDS):
        for i, changelog in enumerate(changelogs):
            append_jsonl(changelog, [(f"k{(round_ * 3 + i + j) % 8}", {"by": changelog.stem, "round": round_})
                                     for j in range(3)])
        barrier = tmp_path / f"arrived-{round_}"
        barrier.mkdir()
        runs = [subprocess.Popen(
            [sys.executable, "-m", "combe", "publish", "--source", str(changelog), "--store", url,
             "--dataset", DATASET, "--once", "--no-max-removed", "--validator", "barrier:both_arrived"],
            env={**env, "COMBE_TEST_BARRIER": str(barrier)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True) for changelog in changelogs]
        outputs = [run.communicate(timeout=60) for run in runs]
        results = [(run.returncode, out, err) for run, (out, err) in zip(runs, outputs)]
        assert sorted(code for code, _, _ in results) == [0, EXIT_CONFLICT], results
        (_, won, _), = [r for r in results if r[0] == 0]
        (_, _, lost), = [r for r in results if r[0] == EXIT_CONFLICT]
        assert f"published version {round_ + 1}" in won
        assert f"version {round_ + 1} was written by another producer first; nothing was announced by this one" \
               in lost
        assert "Traceback" not in lost
    assert check_race(s3_server, url, prefix) == CLI_ROUNDS
