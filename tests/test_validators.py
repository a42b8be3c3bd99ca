"""Checks before announcing: built-in limits, custom validators, and the integrity check."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import combe.producer.cycle as cycle_module
from combe.cli import EXIT_REFUSED, EXIT_USAGE, main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.errors import IntegrityError, ValidationError
from combe.producer import PublishOptions, Publisher, open_source
from combe.producer.fold import FoldResult, fold
from combe.producer.state import State
from combe.producer.validators import Limits, ValidationContext
from tests.support.changelog import append_jsonl

DATASET = "movies"


def movies(start: int, stop: int) -> list[tuple[str, dict[str, Any]]]:
    return [(f"m{i:04d}", {"title": f"Movie {i}", "year": 1900 + i % 120}) for i in range(start, stop)]


def publish(store: str, source: Path, *flags: str) -> int:
    return main(["publish", "--source", str(source), "--store", store, "--dataset", DATASET, "--once", *flags])


def cycle(store: str, source: Path, options: PublishOptions | None = None) -> Any:
    with open_source(str(source)) as opened:
        return Publisher(Dataset.open(store, DATASET), opened, options).run_cycle()


def announced(store: str) -> int | None:
    return Dataset.open(store, DATASET).announced().version


# -- built-in limits -----------------------------------------------------------------------------


def test_a_cycle_removing_60_percent_is_refused_and_consumers_stay(store: str, changelog: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(changelog, movies(0, 1000))
    assert publish(store, changelog) == 0  # the first version has no previous count to compare with
    with Consumer(store, DATASET) as consumer:
        append_jsonl(changelog, [(key, None) for key, _ in movies(0, 600)])
        capsys.readouterr()
        assert publish(store, changelog) == EXIT_REFUSED
        error = capsys.readouterr().err
        assert "would remove 600 of 1000 records (60%), above --max-removed 50%" in error
        assert "--no-max-removed" in error  # and what to do about it
        assert announced(store) == 1
        assert Dataset.open(store, DATASET).versions() == [1]  # no manifest either
        assert consumer.refresh() is False
        assert consumer.version == 1 and len(consumer) == 1000
        assert consumer.get("m0000") == {"key": "m0000", "title": "Movie 0", "year": 1900}

        assert publish(store, changelog, "--max-removed", "60%") == 0  # at the limit is allowed
        assert consumer.refresh() is True
        assert consumer.version == 2 and len(consumer) == 400 and consumer.get("m0000") is None


def test_no_max_removed_turns_the_limit_off(store: str, changelog: Path) -> None:
    append_jsonl(changelog, movies(0, 10))
    assert publish(store, changelog) == 0
    append_jsonl(changelog, [(key, None) for key, _ in movies(0, 10)])
    assert publish(store, changelog) == EXIT_REFUSED
    assert publish(store, changelog, "--no-max-removed") == 0
    assert Dataset.open(store, DATASET).manifest(2).record_count == 0


def test_additions_are_limited_once_the_dataset_has_grown(store: str, changelog: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(changelog, movies(0, 20))
    assert publish(store, changelog) == 0
    append_jsonl(changelog, movies(20, 200))  # +900%, but 20 records is below the floor: still filling up
    assert publish(store, changelog) == 0
    append_jsonl(changelog, movies(200, 500))
    capsys.readouterr()
    assert publish(store, changelog) == EXIT_REFUSED
    assert "would add 300 records to 200 (150%), above --max-added 100%" in capsys.readouterr().err
    assert publish(store, changelog, "--max-added", "1.5") == 0
    assert announced(store) == 3


def test_min_records(store: str, changelog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(changelog, movies(0, 3))
    assert publish(store, changelog, "--min-records", "5") == EXIT_REFUSED
    assert "would hold 3 records, below --min-records 5" in capsys.readouterr().err
    assert announced(store) is None
    assert publish(store, changelog, "--min-records", "3") == 0


def test_empty_keys_are_refused_unless_allowed(store: str, changelog: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(changelog, [*movies(0, 3), ("", {"title": "no key"})])
    assert publish(store, changelog) == EXIT_REFUSED
    assert "1 record(s) with a null or empty key" in capsys.readouterr().err
    assert publish(store, changelog, "--allow-empty-keys") == 0
    assert Dataset.open(store, DATASET).manifest(1).record_count == 4


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="max_removed=-0.1"):
        Limits(max_removed=-0.1)
    with pytest.raises(SystemExit) as exited:
        main(["publish", "--source", "x", "--store", "s", "--dataset", "d", "--max-added", "lots"])
    assert exited.value.code == EXIT_USAGE


# -- custom validators ---------------------------------------------------------------------------


VALIDATORS = '''
seen = []

def no_remakes(context):
    titles = context.result.delta.column("title").to_pylist()
    if any(title and "remake" in title for title in titles):
        raise ValueError("remakes are not allowed in this catalogue")

def record(context):
    seen.append((context.version, context.previous_count, context.new_count))
'''


@pytest.fixture
def validators_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    folder = tmp_path / "checks"
    folder.mkdir()
    (folder / "catalogue_checks.py").write_text(VALIDATORS)
    monkeypatch.syspath_prepend(str(folder))
    yield "catalogue_checks"
    sys.modules.pop("catalogue_checks", None)  # the next test imports its own copy


def test_a_custom_validator_that_raises_refuses_with_its_message(store: str, changelog: Path, validators_module: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(changelog, movies(0, 5))
    assert publish(store, changelog, "--validator", f"{validators_module}:no_remakes") == 0
    append_jsonl(changelog, [("m0001", {"title": "Movie 1 (the remake)", "year": 2024})])
    capsys.readouterr()
    assert publish(store, changelog, "--validator", f"{validators_module}:no_remakes") == EXIT_REFUSED
    error = capsys.readouterr().err
    assert "refused" in error and "remakes are not allowed in this catalogue" in error
    assert f"{validators_module}:no_remakes" in error
    assert announced(store) == 1 and Dataset.open(store, DATASET).versions() == [1]


def test_custom_validators_see_the_counts(store: str, changelog: Path, validators_module: str) -> None:
    import catalogue_checks  # type: ignore[import-not-found]

    append_jsonl(changelog, movies(0, 5))
    assert publish(store, changelog, "--validator", f"{validators_module}:record") == 0
    append_jsonl(changelog, [("m0000", None), *movies(5, 7)])
    assert publish(store, changelog, "--validator", f"{validators_module}:record") == 0
    assert catalogue_checks.seen == [(1, None, 5), (2, 5, 6)]  # the first version has no previous count


def test_library_validators_and_their_errors(store: str, changelog: Path) -> None:
    append_jsonl(changelog, movies(0, 5))

    def never(context: ValidationContext) -> None:
        raise RuntimeError

    with pytest.raises(ValidationError) as refused:
        cycle(store, changelog, PublishOptions(validators=[never]))
    assert refused.value.validator.endswith("never") and "RuntimeError" in str(refused.value)
    assert refused.value.version == 1 and announced(store) is None


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "expected module:function"),
    ("not_a_module_anywhere:check", "cannot import"),
    ("catalogue_checks:missing", "has no 'missing'"),
    ("catalogue_checks:seen", "is not callable"),
])
def test_a_bad_validator_spec_is_a_usage_error(store: str, changelog: Path, validators_module: str, spec: str,
                                               message: str, capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(changelog, movies(0, 5))
    assert publish(store, changelog, "--validator", spec) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert announced(store) is None


# -- the integrity check -------------------------------------------------------------------------


def corrupt(which: str) -> Any:
    """A fold that emits a wrong delta (or reverse delta): its first row's title changed."""
    def corrupted_fold(previous: pa.Table, changes: Any) -> FoldResult:
        result = fold(previous, changes)
        table = getattr(result, which)
        titles = table.column("title").to_pylist()
        titles[0] = "corrupted"
        setattr(result, which, table.set_column(table.column_names.index("title"), "title",
                                                pa.array(titles, pa.string())))
        return result
    return corrupted_fold


@pytest.mark.parametrize("which, message", [("delta", "previous state + delta != new state"),
                                            ("reverse", "new state + reverse delta != previous state")])
def test_a_corrupted_delta_is_caught_and_nothing_announced(store: str, changelog: Path, which: str, message: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    append_jsonl(changelog, movies(0, 5))
    cycle(store, changelog)
    append_jsonl(changelog, [("m0001", {"title": "Movie 1 (director's cut)", "year": 1901})])
    monkeypatch.setattr(cycle_module, "fold", corrupt(which))
    with pytest.raises(IntegrityError, match=message.replace("+", r"\+")):
        cycle(store, changelog)
    assert announced(store) == 1 and Dataset.open(store, DATASET).versions() == [1]
    assert main(["publish", "--source", str(changelog), "--store", store, "--dataset", DATASET, "--once"]) == 1

    # With the check off the same corruption would reach consumers: the check is what stopped it.
    assert cycle(store, changelog, PublishOptions(integrity_check=False)).version == 2


def test_a_snapshot_merged_wrong_is_caught_and_nothing_announced(store: str, changelog: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot cycle merges the base and the overlay of changed rows: its rows are summed again and compared
    with the checksum the delta advanced to."""
    append_jsonl(changelog, movies(0, 5))
    publisher = Publisher(Dataset.open(store, DATASET), open_source(str(changelog)), PublishOptions(snapshot_every=1))
    publisher.run_cycle()
    append_jsonl(changelog, [("m0001", {"title": "Movie 1 (director's cut)", "year": 1901})])
    merge = State.table

    def merged_wrong(state: State) -> pa.Table:
        table = merge(state)
        return table.set_column(1, "title", pa.array(["wrong"] * table.num_rows, pa.string()))

    monkeypatch.setattr(State, "table", merged_wrong)
    with pytest.raises(IntegrityError, match="does not hold the folded state"):
        publisher.run_cycle()
    assert announced(store) == 1


@pytest.mark.parametrize("first", [True, False])
def test_a_snapshot_blob_that_does_not_decompress_to_what_was_written_is_caught(
        store: str, changelog: Path, monkeypatch: pytest.MonkeyPatch, first: bool) -> None:
    append_jsonl(changelog, movies(0, 5))
    if not first:
        cycle(store, changelog)
        append_jsonl(changelog, movies(5, 10))
    encode = cycle_module.encode_table

    def damaged(table: pa.Table, **options: Any) -> bytes:
        blob = bytearray(encode(table, **options))
        blob[len(blob) // 2] ^= 0x10
        return bytes(blob)

    monkeypatch.setattr(cycle_module, "encode_table", damaged)
    with pytest.raises(IntegrityError, match="does not decompress|not a valid zstd frame|without a content"):
        cycle(store, changelog, PublishOptions(snapshot_every=1))
    assert announced(store) == (None if first else 1)
