"""The publish cycle: crash safety, resume from the announced position, bad input."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from combe.cli import main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.errors import BadRecordError, SourceError
from combe.producer import PublishOptions, Publisher, RecordFormat, open_source
from combe.producer.state import load_state
from tests.support.changelog import append_jsonl, append_lines, canon, replay, table_state

FIRST = [(f"m{i}", {"title": f"Movie {i}", "year": 1990 + i}) for i in range(8)]
SECOND = [("m1", {"title": "Movie 1 (remastered)", "year": 1991}), ("m2", None), ("m8", {"title": "New", "year": 2024}),
          ("m3", {"title": "Movie 3", "year": 1993}),  # unchanged
          ("m1", {"title": "Movie 1 (final cut)", "year": 1991, "tags": ["cult"]})]
THIRD = [("m9", {"title": "Ninth", "year": 2025}), ("m4", None)]

# Runs one cycle in a fresh process and SIGKILLs it at the named step (DESIGN.md, "Cycle").
KILLER = textwrap.dedent("""\
    import os, signal, sys
    from combe.format.dataset import Dataset
    from combe.producer import PublishOptions, Publisher, open_source

    store, source, step = sys.argv[1:]

    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)

    options = PublishOptions()
    if step == "before-manifest":
        options.validators.append(die)  # validators run once the blobs are written, before the manifest
    elif step == "before-announce":
        Dataset.announce = die  # the manifest is written; the compare-and-swap never happens
    Publisher(Dataset.open(store, "movies"), open_source(source), options).run_cycle()
    sys.exit("the cycle finished: the kill did not happen")
""")


def publish(store: str, path: Path | str, **options: Any) -> Any:
    source_options = {"key_delimiter": options.pop("key_delimiter")} if "key_delimiter" in options else {}
    publisher = Publisher(Dataset.open(store, "movies"), open_source(str(path), **source_options),
                          PublishOptions(**options))
    return publisher.run_cycle()


def killed_cycle(tmp_path: Path, store: str, path: Path, step: str) -> None:
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    done = subprocess.run([sys.executable, str(script), store, str(path), step], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stderr


def consumer_state(store: str) -> tuple[int, dict[Any, str]]:
    with Consumer(store, "movies") as consumer, consumer.view() as view:
        return view.version, table_state(view.table, view.schema)


def stored_state(store: str, version: int) -> dict[Any, str]:
    dataset = Dataset.open(store, "movies")
    manifest = dataset.manifest(version)
    return table_state(load_state(dataset, manifest).table(), manifest.schema)


def referenced_blobs(dataset: Dataset) -> set[str]:
    refs = set()
    for version in dataset.versions():
        manifest = dataset.manifest(version)
        refs |= {ref.path for ref in (manifest.snapshot, manifest.delta, manifest.reverse) if ref}
    return refs


def test_killed_after_blobs_before_manifest(tmp_path: Path, store: str, changelog: Path) -> None:
    append_jsonl(changelog, FIRST)
    assert publish(store, changelog).version == 1
    dataset = Dataset.open(store, "movies")
    announced_before = dataset.announced()
    first_end = changelog.stat().st_size
    append_jsonl(changelog, SECOND)

    killed_cycle(tmp_path, store, changelog, "before-manifest")

    # The announced version is untouched and readable; the dead cycle's blobs are unreferenced garbage.
    assert dataset.announced() == announced_before
    assert dataset.versions() == [1]
    orphans = {info.path for info in dataset.store.list("blobs/")} - referenced_blobs(dataset)
    assert orphans, "the producer was killed before it wrote its blobs"
    assert consumer_state(store) == (1, replay(FIRST))

    result = publish(store, changelog)
    assert (result.outcome, result.version) == ("published", 2)
    manifest = dataset.manifest(2)
    # Only the records after version 1's position were folded, each once.
    assert manifest.positions == {str(changelog): {"0": changelog.stat().st_size}}
    assert dataset.manifest(1).positions == {str(changelog): {"0": first_end}}
    assert manifest.changes["messages"] == len(SECOND)
    assert (result.added, result.updated, result.removed) == (1, 1, 1)
    assert manifest.changes["unchanged"] == 1  # m3 (m1's two changes fold into one update)
    expected = replay(FIRST + SECOND)
    assert manifest.record_count == len(expected)
    assert stored_state(store, 2) == expected
    assert consumer_state(store) == (2, expected)
    assert {ref for ref in referenced_blobs(dataset)} & orphans == set()  # new names, nothing overwritten
    again = publish(store, changelog)
    assert (again.outcome, again.version, again.messages) == ("noop", 2, 0)


def test_killed_after_manifest_before_announce(tmp_path: Path, store: str, changelog: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(changelog, FIRST)
    assert publish(store, changelog).version == 1
    append_jsonl(changelog, SECOND)

    killed_cycle(tmp_path, store, changelog, "before-announce")

    dataset = Dataset.open(store, "movies")
    assert dataset.versions() == [1, 2]  # written, never announced
    assert dataset.announced().version == 1
    assert consumer_state(store) == (1, replay(FIRST))
    written = dataset.store.read("versions/000000000002.json")

    # The rerun announces the stopped producer's version rather than skipping or redoing it.
    argv = ["publish", "--source", str(changelog), "--store", store, "--dataset", "movies", "--once"]
    assert main(argv) == 0
    assert "left unannounced by a stopped producer" in capsys.readouterr().out
    assert dataset.announced().version == 2
    assert dataset.store.read("versions/000000000002.json") == written
    expected = replay(FIRST + SECOND)
    assert consumer_state(store) == (2, expected)

    # Then it continues from version 2's position: the new lines only, version 3, nothing skipped or doubled.
    append_jsonl(changelog, THIRD)
    result = publish(store, changelog)
    assert (result.outcome, result.version, result.messages) == ("published", 3, len(THIRD))
    assert dataset.versions() == [1, 2, 3]
    assert [dataset.manifest(v).parent for v in (1, 2, 3)] == [None, 1, 2]
    assert sum(dataset.manifest(v).changes["messages"] for v in (1, 2, 3)) == len(FIRST + SECOND + THIRD)
    expected = replay(THIRD, expected)
    assert consumer_state(store) == (3, expected)
    assert publish(store, changelog).outcome == "noop"


def test_adopting_a_first_version_never_announced(tmp_path: Path, store: str, changelog: Path) -> None:
    append_jsonl(changelog, FIRST)
    killed_cycle(tmp_path, store, changelog, "before-announce")
    dataset = Dataset.open(store, "movies")
    assert dataset.announced().pointer is None and dataset.versions() == [1]
    result = publish(store, changelog)
    assert (result.outcome, result.version) == ("adopted", 1)
    assert consumer_state(store) == (1, replay(FIRST))
    assert publish(store, changelog).outcome == "noop"


def test_appending_continues_from_the_stored_offset(store: str, changelog: Path) -> None:
    append_jsonl(changelog, FIRST[:3])
    assert publish(store, changelog).version == 1
    append_jsonl(changelog, FIRST[3:5])
    result = publish(store, changelog)
    assert (result.version, result.messages, result.added) == (2, 2, 2)
    assert Dataset.open(store, "movies").manifest(2).positions[str(changelog)]["0"] == changelog.stat().st_size
    # Line numbers in errors count from the top of the file, not from the resume point.
    append_lines(changelog, ["{broken"])
    with pytest.raises(BadRecordError, match=f"{changelog} line 6: malformed JSON"):
        publish(store, changelog)
    assert stored_state(store, 2) == replay(FIRST[:5])


def test_a_truncated_source_file_is_a_clear_error(store: str, changelog: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(changelog, FIRST)
    assert publish(store, changelog).version == 1
    changelog.write_text(changelog.read_text()[:40])
    with pytest.raises(SourceError, match="truncated or replaced"):
        publish(store, changelog)
    code = main(["publish", "--source", str(changelog), "--store", store, "--dataset", "movies", "--once"])
    error = capsys.readouterr().err
    assert code == 1
    assert str(changelog) in error and "shorter than" in error
    assert Dataset.open(store, "movies").versions() == [1]


# -- bad input -------------------------------------------------------------------------------

GOOD = ['{"key": "a", "value": {"x": 1}}', '{"key": "b", "value": {"x": 2}}']
LAST = '{"key": "c", "value": {"x": 3}}'
BAD_JSONL = {
    "malformed JSON": ('{"key": "bad", "value": {"x": 4}', "malformed JSON"),
    "value not an object": ('{"key": "bad", "value": [4]}', "not an object"),
    "missing key": ('{"value": {"x": 4}}', 'no "key" field'),
    "key disagrees": ('{"key": "bad", "value": {"key": "other", "x": 4}}', "'other' but the record's key is 'bad'"),
    "type conflict": ('{"key": "bad", "value": {"x": "four"}}', "type conflict: field 'x'"),
}
GOOD_KCAT = ['a,{"x": 1}', 'b,{"x": 2}']
LAST_KCAT = 'c,{"x": 3}'
BAD_KCAT = {
    "malformed JSON": ('bad,{"x": 4', "not valid JSON"),
    "value not an object": ("bad,[4]", "not an object"),
    "missing key": ('{"x": 4}', "no key delimiter ','"),
    "key disagrees": ('bad,{"key": "other", "x": 4}', "'other' but the record's key is 'bad'"),
    "type conflict": ('bad,{"x": "four"}', "type conflict: field 'x'"),
}


def kcat(delimiter: bool) -> dict[str, Any]:
    return {"key_delimiter": ","} if delimiter else {}


@pytest.mark.parametrize("kcat_style", [False, True], ids=["jsonl", "kcat"])
@pytest.mark.parametrize("case", list(BAD_JSONL))
def test_bad_record_fails_naming_file_and_line(store: str, changelog: Path, case: str, kcat_style: bool) -> None:
    good, last, (line, reason) = (GOOD_KCAT, LAST_KCAT, BAD_KCAT[case]) if kcat_style else (GOOD, LAST, BAD_JSONL[case])
    append_lines(changelog, [*good, line, last])
    with pytest.raises(BadRecordError) as caught:
        publish(store, changelog, **kcat(kcat_style))
    message = str(caught.value)
    assert f"{changelog} line 3" in message and reason in message, message
    assert Dataset.open(store, "movies").announced().pointer is None


@pytest.mark.parametrize("kcat_style", [False, True], ids=["jsonl", "kcat"])
def test_bad_record_against_the_held_schema(store: str, changelog: Path, kcat_style: bool) -> None:
    good, last, (line, reason) = (GOOD_KCAT, LAST_KCAT, BAD_KCAT["type conflict"]) if kcat_style \
        else (GOOD, LAST, BAD_JSONL["type conflict"])
    append_lines(changelog, good)
    assert publish(store, changelog, **kcat(kcat_style)).version == 1
    append_lines(changelog, [last, line])
    with pytest.raises(BadRecordError, match=f"{changelog} line 4: {reason}"):
        publish(store, changelog, **kcat(kcat_style))
    assert Dataset.open(store, "movies").announced().version == 1


@pytest.mark.parametrize("kcat_style", [False, True], ids=["jsonl", "kcat"])
def test_bad_records_through_the_cli(store: str, changelog: Path, kcat_style: bool,
                                     capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    good, last, bad = (GOOD_KCAT, LAST_KCAT, BAD_KCAT) if kcat_style else (GOOD, LAST, BAD_JSONL)
    append_lines(changelog, [*good, *(line for line, _ in bad.values()), last])
    argv = ["publish", "--source", str(changelog), "--store", store, "--dataset", "movies", "--once"]
    argv += ["--key-delimiter", ","] if kcat_style else []

    assert main([*argv, "--on-bad-record", "fail"]) == 1
    error = capsys.readouterr().err
    assert f"{changelog} line 3" in error and list(bad.values())[0][1] in error, error
    assert Dataset.open(store, "movies").announced().pointer is None

    with caplog.at_level(logging.WARNING, logger="combe"):
        assert main([*argv, "--on-bad-record", "skip"]) == 0
    dataset = Dataset.open(store, "movies")
    manifest = dataset.manifest(1)
    assert manifest.changes["bad_records"] == len(bad)
    assert manifest.changes["messages"] == len(good) + len(bad) + 1
    assert stored_state(store, 1) == {"a": canon({"x": 1}), "b": canon({"x": 2}), "c": canon({"x": 3})}
    # Never silent: every skipped record is logged with where it is and why.
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    for number, (_, reason) in enumerate(bad.values(), start=3):
        assert any(f"{changelog} line {number}" in m and reason in m for m in skipped), (number, skipped)


def test_skip_keeps_the_previous_value(store: str, changelog: Path) -> None:
    append_lines(changelog, GOOD)
    assert publish(store, changelog).version == 1
    append_lines(changelog, ['{"key": "a", "value": {"x": "one"}}', '{"key": "b", "value": {"x": 20}}'])
    result = publish(store, changelog, on_bad_record="skip")
    assert (result.version, result.bad_records, result.updated) == (2, 1, 1)
    assert stored_state(store, 2) == {"a": canon({"x": 1}), "b": canon({"x": 20})}


def test_key_types_and_key_field(store: str, changelog: Path) -> None:
    """An int64 key under another field name; digits in a kcat key are an int, a value's key field must agree."""
    append_lines(changelog, ['7,{"id": 7, "title": "Seven"}', '-3,{"title": "Minus"}', '12,{"title": "Twelve"}'])
    options = dict(key_delimiter=",", fmt=RecordFormat(key_field="id", key_type="int64"))
    assert publish(store, changelog, **options).version == 1
    with Consumer(store, "movies") as consumer:
        assert consumer.get(7) == {"id": 7, "title": "Seven"}
        assert consumer.get("-3") == {"id": -3, "title": "Minus"}
        assert [r["id"] for r in consumer.view().table.to_pylist()] == [-3, 7, 12]
    append_lines(changelog, ['x1,{"title": "not an int"}'])
    with pytest.raises(BadRecordError, match="line 4: key 'x1' is not a 64-bit integer"):
        publish(store, changelog, **options)


def test_kill_script_is_real(tmp_path: Path, store: str, changelog: Path) -> None:
    """The helper really kills: without a kill step the cycle completes and the script says so."""
    append_jsonl(changelog, FIRST)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    done = subprocess.run([sys.executable, str(script), store, str(changelog), "none"], capture_output=True,
                          text=True, timeout=60, env={**os.environ})
    assert done.returncode == 1 and "the kill did not happen" in done.stderr
    assert Dataset.open(store, "movies").announced().version == 1


@pytest.mark.parametrize("every, ratio, snapshots", [
    (3, 1e9, [True, False, False, True, False, False, True]),  # by version count
    (100, 0.01, [True] * 7),                                    # deltas pass 1% of the snapshot at once
    (100, 1e9, [True] + [False] * 6),
])
def test_snapshot_policy(store: str, changelog: Path, every: int, ratio: float, snapshots: list[bool]) -> None:
    append_jsonl(changelog, FIRST)
    assert publish(store, changelog, snapshot_every=every, snapshot_ratio=ratio).version == 1
    for version in range(2, 8):
        append_jsonl(changelog, [(f"m{version}", {"title": f"v{version}", "year": 2000 + version})])
        assert publish(store, changelog, snapshot_every=every, snapshot_ratio=ratio).version == version
    dataset = Dataset.open(store, "movies")
    manifests = [dataset.manifest(v) for v in range(1, 8)]
    assert [m.snapshot is not None for m in manifests] == snapshots
    last_snapshot = 0
    for manifest in manifests:
        last_snapshot = manifest.version if manifest.snapshot else last_snapshot
        assert manifest.snapshot_version == last_snapshot
        assert (manifest.delta is None) == (manifest.version == 1) == (manifest.reverse is None)
        for ref in (manifest.snapshot, manifest.delta, manifest.reverse):
            if ref is not None:
                assert len(dataset.read_blob(ref)) == ref.bytes  # read_blob verifies the sha256
    assert stored_state(store, 7) == replay(FIRST + [(f"m{v}", {"title": f"v{v}", "year": 2000 + v})
                                                     for v in range(2, 8)])


def test_a_snapshot_that_fails_its_check_is_never_referenced(store: str, changelog: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot is checked while the blobs are written: a failed check raises before any manifest, and the
    blob written meanwhile is unreferenced garbage, as every blob of a failed cycle is."""
    from combe.format.errors import IntegrityError
    from combe.producer import cycle

    def damaged(data: bytes | bytearray, *, path: str) -> None:
        raise IntegrityError(f"blob {path} does not decompress: damaged", path=path)

    append_jsonl(changelog, FIRST)
    monkeypatch.setattr(cycle, "check_blob", damaged)
    with pytest.raises(IntegrityError, match="does not decompress"):
        publish(store, changelog)
    dataset = Dataset.open(store, "movies")
    assert dataset.announced().version is None and dataset.versions() == []
    assert [info.path for info in dataset.store.list("blobs/")] != [] and referenced_blobs(dataset) == set()
    monkeypatch.undo()
    assert publish(store, changelog).version == 1
    assert consumer_state(store) == (1, replay(FIRST))
