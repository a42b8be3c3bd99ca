"""The fold, end to end: any changelog cut into any cycles publishes exactly what a dict replay holds."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from combe.cli import main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.delta import apply_delta
from combe.format.schema import conform
from combe.producer import PublishOptions, Publisher, RecordFormat, open_source
from combe.producer.state import load_state, read_table
from combe.producer.validators import Limits

from tests.support.changelog import append_jsonl, canon, replay, table_state
from tests.support.properties import examples

STRING_KEYS = ["", "a", "b", "key-1", "é", "日本", "z" * 40]
INT_KEYS = [0, 1, -1, 7, 42, 2**63 - 1, -(2**63)]

# -0.0 + 0.0 is 0.0: the format compares floats by value, so -0.0 and 0.0 are one value.
floats = st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f + 0.0)
ints = st.integers(-(2**63), 2**63 - 1)
# Each field keeps one typed shape at every depth (a conflict is a bad record, tested in test_cycle.py and
# test_decode.py); any value, struct field or list item may be null, and struct fields come and go.
values = st.fixed_dictionaries({}, optional={
    "n": st.none() | ints,
    "s": st.none() | st.text(max_size=6),
    "f": st.none() | floats,
    "b": st.none() | st.booleans(),
    "l": st.none() | st.lists(st.none() | st.text(max_size=3), max_size=3),
    "o": st.none() | st.fixed_dictionaries({}, optional={
        "a": st.none() | ints, "b": st.lists(floats, max_size=2),
        "c": st.fixed_dictionaries({}, optional={"d": st.none() | st.booleans()})}),
    "q w": st.none() | st.dictionaries(st.sampled_from(["x", "y z", "é", ""]), st.integers(-5, 5), max_size=2),
    "ll": st.none() | st.lists(st.lists(st.integers(-3, 3), max_size=2), max_size=2),
})


@st.composite
def changelogs(draw: st.DrawFn) -> tuple[str, list[list[tuple[Any, Any]]], list[bool]]:
    """A key type, the log cut into cycles (some empty), and whether each cycle restarts the producer."""
    key_type = draw(st.sampled_from(["string", "int64"]))
    keys = st.sampled_from(STRING_KEYS if key_type == "string" else INT_KEYS)
    change = st.tuples(keys, st.one_of(st.none(), values, values, values))
    log = draw(st.lists(change, max_size=30))
    cuts = sorted(draw(st.lists(st.integers(0, len(log)), max_size=5)))
    bounds = [0, *cuts, len(log)]
    cycles = [log[start:end] for start, end in zip(bounds, bounds[1:])]
    restarts = draw(st.lists(st.booleans(), min_size=len(cycles), max_size=len(cycles)))
    return key_type, cycles, restarts


def forget(store: str) -> None:
    """Drop a memory:// store's objects (the memory filesystem is process-wide)."""
    fs = fsspec.filesystem("memory")
    root = "/" + store.removeprefix("memory://")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def memory_store() -> Iterator[str]:
    store = f"memory://fold-{uuid.uuid4().hex}"
    yield store
    forget(store)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log=changelogs(), snapshot_every=st.integers(1, 4), snapshot_ratio=st.sampled_from([0.5, 1e9]),
       data=st.data())
def test_published_versions_equal_a_dict_replay(log: tuple, snapshot_every: int, snapshot_ratio: float,
                                                data: st.DataObject) -> None:
    key_type, cycles, restarts = log
    universe = STRING_KEYS if key_type == "string" else INT_KEYS
    store = f"memory://fold-{uuid.uuid4().hex}"
    # The built-in safety limits (mass removal, empty keys) would refuse arbitrary logs; they have their own tests.
    options = PublishOptions(fmt=RecordFormat(key_type=key_type), snapshot_every=snapshot_every,
                             snapshot_ratio=snapshot_ratio,
                             limits=Limits(max_removed=None, max_added=None, allow_empty_keys=True))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "changes.jsonl"
            path.touch()
            dataset = Dataset.open(store, "things")
            expected: dict[int, dict[Any, str]] = {}  # version -> replayed state
            state: dict[Any, str] = {}
            publisher = None
            unpublished = 0  # records after the last published position: a no-op cycle records none
            for cycle, restart in zip(cycles, restarts):
                append_jsonl(path, cycle)
                previous, state = state, replay(cycle, state)
                if publisher is None or restart:
                    publisher = Publisher(dataset, open_source(str(path)), options)
                result = publisher.run_cycle()
                unpublished += len(cycle)
                assert result.messages == unpublished
                if state == previous:
                    assert result.outcome == "noop", result
                    assert dataset.versions() == sorted(expected)
                else:
                    assert (result.outcome, result.version) == ("published", len(expected) + 1), result
                    expected[len(expected) + 1] = state
                    unpublished = 0
            if not expected:
                assert dataset.announced().pointer is None
                return
            check_store(dataset, expected)
            check_consumer(store, expected, universe, data)
    finally:
        forget(store)


def check_store(dataset: Dataset, expected: dict[int, dict[Any, str]]) -> None:
    """Every version's state, and its delta and reverse delta, read back from the store's blobs."""
    assert dataset.versions() == list(expected)
    assert dataset.announced().version == len(expected)
    manifests = {version: dataset.manifest(version) for version in expected}
    states = {version: load_state(dataset, manifest).table() for version, manifest in manifests.items()}
    for version, manifest in manifests.items():
        schema = manifest.schema
        table = states[version]
        assert table_state(table, schema) == expected[version], f"version {version}"
        assert manifest.record_count == len(expected[version])
        keys = table.column(schema.key_field).to_pylist()
        assert keys == sorted(keys), "a state is sorted by key"
        if version == 1:
            assert manifest.parent is None and manifest.snapshot is not None
            continue
        assert manifest.parent == version - 1
        assert manifest.delta is not None and manifest.reverse is not None
        before = conform(states[version - 1], schema)
        forward = apply_delta(before, read_table(dataset, manifest.delta, manifest), schema)
        assert table_state(forward, schema) == expected[version], f"state({version - 1}) + delta({version})"
        backward = apply_delta(table, read_table(dataset, manifest.reverse, manifest), schema)
        assert table_state(backward, schema) == expected[version - 1], f"state({version}) + reverse({version})"
        changed = {k for k in expected[version].keys() | expected[version - 1].keys()
                   if expected[version].get(k) != expected[version - 1].get(k)}
        counts = manifest.changes
        assert counts["added"] + counts["updated"] + counts["removed"] == len(changed)
        assert manifest.delta.rows == len(changed) == manifest.reverse.rows


def check_consumer(store: str, expected: dict[int, dict[Any, str]], universe: list, data: st.DataObject) -> None:
    """A consumer at the announced version, then moved to every version in a drawn order."""
    latest = max(expected)
    with Consumer(store, "things") as consumer:
        order = data.draw(st.permutations(list(expected)), label="pin order")
        for version in [latest, *order, latest]:
            if version != consumer.version:
                consumer.set_pin(version)
            assert consumer.version == version
            with consumer.view() as view:
                columns = [view.schema.key_field, *view.schema.columns]
                assert view.table.column_names == columns
                assert table_state(view.table, view.schema) == expected[version], f"table at {version}"
                assert len(view) == len(expected[version])
                records = view.get_many(universe)
            for key, record in zip(universe, records):
                assert canon(record) == expected[version].get(key), f"get({key!r}) at version {version}"
                if record is not None:
                    assert list(record) == columns, f"get({key!r}) at version {version} has every column"


# -- what is not a change ------------------------------------------------------------------


@pytest.fixture
def changelog(tmp_path: Path) -> Path:
    path = tmp_path / "changes.jsonl"
    path.touch()
    return path


def publisher_for(store: str, path: Path) -> Publisher:
    return Publisher(Dataset.open(store, "things"), open_source(str(path)))


def test_a_value_left_unchanged_is_not_a_change(memory_store: str, changelog: Path) -> None:
    append_jsonl(changelog, [("a", {"x": 1, "tags": {"p": 1, "q": [1, 2]}}), ("b", {"x": 2})])
    publisher = publisher_for(memory_store, changelog)
    assert publisher.run_cycle().outcome == "published"
    append_jsonl(changelog, [
        ("a", {"tags": {"q": [1, 2], "p": 1}, "x": 1}),  # same fields in another order
        ("b", {"x": 2, "y": None}),                      # a null field is an absent field
        ("c", None),                                     # deleting a key that is not there
        ("d", {"x": 4}), ("d", None),                    # added and deleted within one cycle
        ("b", {"x": 3}), ("b", {"x": 2}),                # changed and changed back
    ])
    result = publisher.run_cycle()
    assert (result.outcome, result.version, result.messages) == ("noop", 1, 7)
    assert Dataset.open(memory_store, "things").versions() == [1]
    append_jsonl(changelog, [("a", {"x": 1, "tags": {"p": 1, "q": [1, 2]}}), ("b", {"x": 5})])
    result = publisher.run_cycle()
    assert (result.outcome, result.version, result.updated, result.added) == ("published", 2, 1, 0)
    manifest = Dataset.open(memory_store, "things").manifest(2)
    # The no-op cycle recorded no position, so its records are read again: a, c and d change nothing.
    assert (manifest.changes["messages"], manifest.changes["unchanged"], manifest.changes["updated"]) == (9, 3, 1)


def test_a_cycle_with_no_change_publishes_nothing(memory_store: str, changelog: Path) -> None:
    publisher = publisher_for(memory_store, changelog)
    result = publisher.run_cycle()
    assert (result.outcome, result.version, result.messages) == ("noop", None, 0)
    assert Dataset.open(memory_store, "things").announced().pointer is None
    append_jsonl(changelog, [("gone", None)])  # a tombstone for a key never seen
    assert publisher.run_cycle().outcome == "noop"
    assert Dataset.open(memory_store, "things").versions() == []
    append_jsonl(changelog, [("a", {"x": 1})])
    assert publisher.run_cycle().version == 1
    dataset = Dataset.open(memory_store, "things")
    before = (dataset.announced().tag, dataset.store.list("blobs/"), dataset.store.list("versions/"))
    for _ in range(3):
        result = publisher.run_cycle()
        assert (result.outcome, result.version, result.messages) == ("noop", 1, 0)
    assert (dataset.announced().tag, dataset.store.list("blobs/"), dataset.store.list("versions/")) == before


def test_publishing_the_same_log_again_publishes_nothing(memory_store: str, changelog: Path,
                                                          tmp_path: Path) -> None:
    log = [("a", {"x": 1}), ("b", {"x": 2}), ("a", {"x": 3}), ("c", {"y": "z"}), ("b", None)]
    append_jsonl(changelog, log)
    assert publisher_for(memory_store, changelog).run_cycle().version == 1
    # the same file again, by a new producer: it resumes after the last line
    result = publisher_for(memory_store, changelog).run_cycle()
    assert (result.outcome, result.messages) == ("noop", 0)
    # the same log in another file: every record is read, none changes anything
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(changelog.read_bytes())
    result = publisher_for(memory_store, copy).run_cycle()
    assert (result.outcome, result.version, result.messages) == ("noop", 1, len(log))
    assert Dataset.open(memory_store, "things").versions() == [1]


def test_publishing_the_same_log_again_through_the_cli(tmp_path: Path, changelog: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(changelog, [("a", {"x": 1}), ("b", {"x": 2})])
    argv = ["publish", "--source", str(changelog), "--store", str(tmp_path / "store"), "--dataset", "things",
            "--once", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["outcome"], first["version"], first["added"]) == ("published", 1, 2)
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["outcome"], second["version"], second["messages"]) == ("noop", 1, 0)
    assert main(argv[:-1]) == 0
    assert "nothing to publish" in capsys.readouterr().out
    assert Dataset.open(str(tmp_path / "store"), "things").versions() == [1]
