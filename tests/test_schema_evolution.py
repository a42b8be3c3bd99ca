"""Schema evolution: new fields ride on deltas, vanished fields stay as nulls, type changes need a snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from combe.cli import main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.errors import BadRecordError
from combe.producer import CycleResult, PublishOptions, Publisher, open_source
from combe.producer.evolution import convert_value
from tests.support.changelog import append_jsonl, replay, table_state

DATASET = "movies"
# Deltas only after version 1, so that what reaches consumers is what a delta carries.
DELTAS_ONLY = dict(snapshot_every=1000, snapshot_ratio=1000.0)
FIRST = [(f"m{i:02d}", {"title": f"Movie {i}", "year": 1990 + i}) for i in range(20)]


@pytest.fixture
def changelog(tmp_path: Path) -> Path:
    path = tmp_path / "movies.jsonl"
    append_jsonl(path, FIRST)
    return path


def cycle(store: str, source: Path, **options: Any) -> CycleResult:
    with open_source(str(source)) as opened:
        return Publisher(Dataset.open(store, DATASET), opened, PublishOptions(**{**DELTAS_ONLY, **options})).run_cycle()


def test_a_new_field_appears_in_consumers_after_a_delta(store: str, changelog: Path) -> None:
    cycle(store, changelog)
    with Consumer(store, DATASET) as consumer:
        append_jsonl(changelog, [("m01", {"title": "Movie 1", "year": 1991, "rating": 8.1}),
                                 ("m20", {"title": "Movie 20", "year": 2010, "rating": 6.5})])
        cycle(store, changelog)
        manifest = Dataset.open(store, DATASET).manifest(2)
        assert manifest.snapshot is None and manifest.delta is not None  # carried by the delta alone
        assert manifest.schema.columns == {"title": "string", "year": "int64", "rating": "float64"}

        assert consumer.refresh() is True
        view = consumer.view()
        assert view.version == 2 and view.base_version == 1  # applied as a delta, not reloaded
        assert consumer.get("m01") == {"key": "m01", "title": "Movie 1", "year": 1991, "rating": 8.1}
        assert consumer.get("m20") == {"key": "m20", "title": "Movie 20", "year": 2010, "rating": 6.5}
        assert consumer.get("m02") == {"key": "m02", "title": "Movie 2", "year": 1992, "rating": None}
        ratings = view.table.column("rating")
        assert len(ratings) == 21 and ratings.null_count == 19
        assert table_state(view.table, view.schema) == replay(FIRST + [
            ("m01", {"title": "Movie 1", "year": 1991, "rating": 8.1}),
            ("m20", {"title": "Movie 20", "year": 2010, "rating": 6.5})])

    with Consumer(store, DATASET) as fresh:  # snapshot 1 (no rating column) + the delta
        assert fresh.get("m01")["rating"] == 8.1 and fresh.get("m03")["rating"] is None


def test_a_field_that_stops_appearing_stays_as_nulls(store: str, changelog: Path) -> None:
    append_jsonl(changelog, [("m01", {"title": "Movie 1", "year": 1991, "rating": 8.1}),
                             ("m02", {"title": "Movie 2", "year": 1992, "rating": 7.0})])
    cycle(store, changelog)
    with Consumer(store, DATASET) as consumer:
        append_jsonl(changelog, [("m01", {"title": "Movie 1 (restored)", "year": 1991})])
        cycle(store, changelog)
        assert Dataset.open(store, DATASET).manifest(2).schema.columns["rating"] == "float64"
        consumer.refresh()
        assert consumer.get("m01") == {"key": "m01", "title": "Movie 1 (restored)", "year": 1991, "rating": None}
        assert consumer.get("m02")["rating"] == 7.0


def test_a_type_change_is_a_bad_record(store: str, changelog: Path) -> None:
    cycle(store, changelog)
    append_jsonl(changelog, [("m01", {"title": "Movie 1", "year": "MCMXCI"})])
    with pytest.raises(BadRecordError, match="type conflict: field 'year' is int64.*allow_schema_change"):
        cycle(store, changelog)
    assert Dataset.open(store, DATASET).versions() == [1]
    skipped = cycle(store, changelog, on_bad_record="skip")
    assert skipped.outcome == "noop" and skipped.bad_records == 1


def test_allow_schema_change_publishes_a_snapshot_only_version(store: str, changelog: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cycle(store, changelog)
    append_jsonl(changelog, [("m05", {"title": "Movie 5", "year": 1995, "rating": 5.0})])
    cycle(store, changelog)
    with Consumer(store, DATASET) as consumer, Consumer(store, DATASET, pin=1) as pinned:
        # Old-type values before and after the first new-type one, in the same cycle.
        append_jsonl(changelog, [("m03", {"title": "Movie 3", "year": 2003}),
                                 ("m01", {"title": "Movie 1", "year": "MCMXCI"}),
                                 ("m04", {"title": "Movie 4", "year": 2004.0})])
        assert main(["publish", "--source", str(changelog), "--store", store, "--dataset", DATASET, "--once",
                     "--allow-schema-change", "--json"]) == 0
        assert '"schema_change": true' in capsys.readouterr().out
        manifest = Dataset.open(store, DATASET).manifest(3)
        assert manifest.schema_change is True
        assert manifest.delta is None and manifest.reverse is None and manifest.snapshot is not None
        assert manifest.snapshot_version == 3 and manifest.parent == 2
        assert manifest.schema.columns["year"] == "string"

        assert consumer.refresh() is True
        assert consumer.view().base_version == 3  # a full reload: no delta could carry the change
        assert consumer.get("m01")["year"] == "MCMXCI"
        assert consumer.get("m02")["year"] == "1992"   # published before: converted
        assert consumer.get("m03")["year"] == "2003"   # old type in the same cycle: converted
        assert consumer.get("m04")["year"] == "2004"  # the JSON text of 2004.0 (canonical, RFC 8785)
        assert consumer.get("m05") == {"key": "m05", "title": "Movie 5", "year": "1995", "rating": 5.0}

        # Versions after it are deltas over its snapshot again; and consumers can still go back past it.
        append_jsonl(changelog, [("m06", {"title": "Movie 6", "year": "2006"})])
        cycle(store, changelog)
        assert Dataset.open(store, DATASET).manifest(4).delta is not None
        assert consumer.refresh() is True and consumer.view().base_version == 3
        assert consumer.get("m06")["year"] == "2006"
        pinned.set_pin(4)  # version 1 -> 4 crosses the change: snapshot 3 + delta 4
        assert pinned.get("m06")["year"] == "2006" and pinned.get("m02")["year"] == "1992"
        consumer.set_pin(2)  # back across the change: there is no reverse delta, so from snapshot 1 + delta 2
        assert consumer.version == 2 and consumer.get("m02")["year"] == 1992 and consumer.get("m05")["rating"] == 5.0


def test_the_command_says_a_schema_change_version_has_no_delta(store: str, changelog: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["publish", "--source", str(changelog), "--store", store, "--dataset", DATASET, "--once",
            "--allow-schema-change", "--snapshot-every", "2"]
    said = []
    for changes in ([], [("n05", {"title": "New 5", "year": 1995})], [("n06", {"title": "New 6", "year": 1996})],
                    [("m01", {"title": "Movie 1", "year": "MCMXCI"})]):
        append_jsonl(changelog, changes)
        assert main(argv) == 0
        said.append(capsys.readouterr().out)
    assert [line.split("(", 1)[1].split(")", 1)[0] for line in said] == [
        "snapshot", "delta", "snapshot + delta", "snapshot only: a column changed type, so no delta"]
    assert Dataset.open(store, DATASET).manifest(4).delta is None


def test_a_type_change_that_changes_no_value_is_still_published(store: str, changelog: Path) -> None:
    cycle(store, changelog)
    append_jsonl(changelog, [("m01", {"title": "Movie 1", "year": "1991"})])  # "1991" == the converted 1991
    result = cycle(store, changelog, allow_schema_change=True)
    assert result.outcome == "published" and result.schema_change and result.updated == 0
    assert Dataset.open(store, DATASET).manifest(2).schema.columns["year"] == "string"


@pytest.mark.parametrize("value, kind, expected", [
    (3, "float64", 3.0), ("2.5", "float64", 2.5), ("nan", "float64", None), (True, "float64", None),
    (4.0, "int64", 4), (4.5, "int64", None), (" 12 ", "int64", 12), ("12a", "int64", None), (2**63, "int64", None),
    (12, "string", "12"), (1.5, "string", "1.5"), (False, "string", "false"), ([1, "a"], "string", '[1,"a"]'),
    ("x", "string", "x"), ({"a": 1}, "json", {"a": 1}), ("true", "bool", True), ("yes", "bool", None),
    (1, "bool", None), (None, "int64", None),
])
def test_conversion_rules(value: Any, kind: str, expected: Any) -> None:
    assert convert_value(value, kind) == expected
