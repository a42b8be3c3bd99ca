"""Publishing from Python: publish_state (a whole state, deletions inferred) and IncrementalPublisher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from combe import (BadRecordError, ConfigError, Consumer, Dataset, IncrementalPublisher, PublishOptions, SourceError,
                   ValidationError, publish_state)
from combe.format.layout import new_uid
from combe.producer.validators import Limits
from tests.support.properties import examples


MOVIES = [{"key": "alien", "title": "Alien", "year": 1979}, {"key": "heat", "title": "Heat", "year": 1995},
          {"key": "up", "title": "Up", "year": 2009}]


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


def rows_of(store: str, name: str = "movies") -> dict[Any, dict[str, Any]]:
    """The announced version's records, read by a real Consumer."""
    with Consumer(store, name) as consumer:
        return {row["key"] if "key" in row else row["id"]: row for row in consumer.view().table.to_pylist()}


def announced(store: str, name: str = "movies") -> int | None:
    return Dataset.open(store, name).announced().version


def versions_written(store: str, name: str = "movies") -> list[str]:
    return sorted(p.name for p in (Path(store) / name / "versions").iterdir())


# -- publish_state ----------------------------------------------------------------------------------


def test_keys_missing_from_the_new_state_are_removed_and_an_unchanged_state_publishes_nothing(store: str) -> None:
    first = publish_state(store, "movies", MOVIES)
    assert (first.outcome, first.version, first.added) == ("published", 1, 3)
    second = publish_state(store, "movies", [{"key": "alien", "title": "Alien", "year": 1979},
                                             {"key": "heat", "title": "Heat", "year": 1996},
                                             {"key": "solaris", "title": "Solaris", "year": 1972}])
    assert (second.version, second.added, second.updated, second.removed) == (2, 1, 1, 1)
    assert rows_of(store) == {"alien": {"key": "alien", "title": "Alien", "year": 1979},
                              "heat": {"key": "heat", "title": "Heat", "year": 1996},
                              "solaris": {"key": "solaris", "title": "Solaris", "year": 1972}}
    again = publish_state(store, "movies", pa.Table.from_pylist(list(rows_of(store).values())))
    assert (again.outcome, again.version) == ("noop", 2)
    assert announced(store) == 2


@pytest.mark.parametrize("truncated", [[], MOVIES[:1]], ids=["empty", "truncated"])
def test_an_empty_or_truncated_state_is_refused_and_nothing_is_published(store: str,
                                                                         truncated: list[dict[str, Any]]) -> None:
    publish_state(store, "movies", MOVIES)
    written = versions_written(store)
    with pytest.raises(ValidationError, match=r"it would remove (3|2) of 3 records .* above max_removed=50%"):
        publish_state(store, "movies", truncated)
    assert announced(store) == 1 and versions_written(store) == written
    assert set(rows_of(store)) == {"alien", "heat", "up"}
    # Meant: a higher limit says so.
    done = publish_state(store, "movies", truncated, options=PublishOptions(limits=Limits(max_removed=None)))
    assert done.removed == 3 - len(truncated) and set(rows_of(store)) == {row["key"] for row in truncated}


def test_a_key_given_twice_is_refused_naming_it(store: str) -> None:
    publish_state(store, "movies", MOVIES)
    twice = [*MOVIES, {"key": "heat", "title": "Heat (1995)", "year": 1995}]
    with pytest.raises(SourceError, match="key 'heat' appears 2 times; a whole state holds each key once"):
        publish_state(store, "movies", twice)
    assert announced(store) == 1


def test_every_kind_of_data_publishes_the_same_state(store: str) -> None:
    table = pa.Table.from_pylist(MOVIES)

    def generated() -> Iterator[dict[str, Any]]:
        yield from MOVIES

    kinds: dict[str, Any] = {
        "dicts": MOVIES, "generator": generated(), "table": table,
        "batch": table.to_batches()[0],
        "reader": pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=1)),
        # Arrow types combe stores as its own: int32 as int64, large_string and dictionaries as string.
        "narrow": pa.table({"key": pa.array(["alien", "heat", "up"]).dictionary_encode(),
                            "title": pa.array(["Alien", "Heat", "Up"], pa.large_string()),
                            "year": pa.array([1979, 1995, 2009], pa.int32())}),
    }
    for name, data in kinds.items():
        result = publish_state(store, name, data)
        assert (result.version, result.added) == (1, 3), name
        assert rows_of(store, name) == {row["key"]: row for row in MOVIES}, name


@pytest.mark.parametrize("module", ["pandas", "polars"])
def test_dataframes_publish(store: str, module: str) -> None:
    frames = pytest.importorskip(module)
    publish_state(store, "movies", frames.DataFrame(MOVIES))
    assert rows_of(store) == {row["key"]: row for row in MOVIES}


def test_int64_keys_and_a_key_column_of_another_name(store: str) -> None:
    publish_state(store, "users", [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}], key="id", key_type="int64")
    publish_state(store, "users", pa.table({"id": ["1", "2", "3"], "name": ["ann", "bo", "cy"]}),
                  key="id", key_type="int64")
    assert rows_of(store, "users") == {1: {"id": 1, "name": "ann"}, 2: {"id": 2, "name": "bo"},
                                       3: {"id": 3, "name": "cy"}}


def test_compound_keys_and_a_declared_schema(store: str) -> None:
    compound = "struct<tenant:int64,id:string>"
    rows = [{"key": {"tenant": 1, "id": "a"}, "n": 1}, {"key": {"tenant": 2, "id": "a"}, "n": 2}]
    publish_state(store, "accounts", rows, key_type=compound)
    assert publish_state(store, "accounts", pa.Table.from_pylist(rows[:1]), key_type=compound,
                         options=PublishOptions(limits=Limits(max_removed=None))).removed == 1
    assert rows_of(store, "accounts") == {'[1,"a"]': {"key": '[1,"a"]', "n": 1}}

    declared = PublishOptions(schema=pa.schema([("id", pa.int64()), ("title", pa.string())]))
    publish_state(store, "users", [{"id": 1, "title": "ann"}], options=declared)  # the schema names the key
    with pytest.raises(BadRecordError, match="row 1 .*field 'title' is int64, which the declared string"):
        publish_state(store, "users", [{"id": 1, "title": 2}], options=declared)
    assert rows_of(store, "users") == {1: {"id": 1, "title": "ann"}}


def test_a_bad_row_is_named_and_nothing_is_published(store: str) -> None:
    publish_state(store, "movies", MOVIES)
    cases: list[tuple[list[Any], str]] = [
        ([*MOVIES[:2], {"key": "up", "title": "Up", "year": "2009"}], "row 3 of the data given to publish_state: "
                                                                      "type conflict: field 'year'"),
        ([*MOVIES[:2], {"title": "Up"}], "row 3 .*: the row has no 'key' field"),
        ([MOVIES[0], ["up"], *MOVIES[1:]], "row 2 .*: the row is a list, not an object of columns"),
        ([*MOVIES, {"key": "x", "year": 2 ** 64}], "row 4 .*: integer 18446744073709551616 does not fit in int64"),
    ]
    for rows, message in cases:
        with pytest.raises(BadRecordError, match=message):
            publish_state(store, "movies", rows)
    with pytest.raises(BadRecordError, match="row 1 .*field 'seen': a value of type datetime is not JSON"):
        import datetime

        publish_state(store, "movies", pa.table({"key": ["a", "b"], "seen": [datetime.datetime(2020, 1, 1)] * 2}))
    assert announced(store) == 1


def test_options_that_do_not_fit_a_whole_state_are_refused(store: str) -> None:
    from combe import RecordFormat

    with pytest.raises(ConfigError, match="leave options.fmt unset"):
        publish_state(store, "movies", MOVIES, options=PublishOptions(fmt=RecordFormat(key_field="id")))
    with pytest.raises(ConfigError, match="deletion of its key"):
        publish_state(store, "movies", MOVIES, options=PublishOptions(on_bad_record="skip"))
    with pytest.raises(ConfigError, match="cannot publish a dict as a whole state"):
        publish_state(store, "movies", {"alien": {"title": "Alien"}})
    assert announced(store) is None


ROW = st.fixed_dictionaries({"n": st.integers(-5, 5)}, optional={"s": st.text(max_size=3)})


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(states=st.lists(st.dictionaries(st.sampled_from("abcdefgh"), ROW, min_size=1), min_size=1, max_size=5))
def test_each_published_state_is_the_state_given(tmp_path: Path, states: list[dict[str, dict[str, Any]]]) -> None:
    """Against a plain dict model: after each publish the dataset holds exactly the state given."""
    store = str(tmp_path / new_uid())
    options = PublishOptions(limits=Limits(max_removed=None, max_added=None))
    for state in states:
        publish_state(store, "p", [{"key": key, **row} for key, row in state.items()], options=options)
        got = {key: {name: value for name, value in row.items() if name != "key" and value is not None}
               for key, row in rows_of(store, "p").items()}
        assert got == state


# -- IncrementalPublisher -----------------------------------------------------------------------------


def test_puts_and_deletes_publish_one_version_on_exit(store: str) -> None:
    publish_state(store, "movies", MOVIES)
    with IncrementalPublisher(store, "movies") as publisher:
        publisher.put("solaris", {"title": "Solaris", "year": 1972})
        publisher.put("heat", {"title": "Heat", "year": 1996})
        publisher.delete("up")
        publisher.put("gone", {"title": "Gone"})
        publisher.delete("gone")  # the last change given for a key wins
        assert announced(store) == 1
    assert publisher.result is not None
    assert (publisher.result.version, publisher.result.added, publisher.result.updated,
            publisher.result.removed) == (2, 1, 1, 1)
    assert set(rows_of(store)) == {"alien", "heat", "solaris"} and rows_of(store)["heat"]["year"] == 1996


def test_an_exception_inside_the_block_publishes_nothing(store: str) -> None:
    publish_state(store, "movies", MOVIES)
    with pytest.raises(RuntimeError, match="the job failed"):
        with IncrementalPublisher(store, "movies") as publisher:
            publisher.delete("alien")
            raise RuntimeError("the job failed")
    assert publisher.result is None and announced(store) == 1 and "alien" in rows_of(store)
    with pytest.raises(ConfigError, match="with block has ended"):
        publisher.put("x", {"title": "X"})


def test_publish_outside_a_block_and_bad_changes(store: str) -> None:
    publisher = IncrementalPublisher(store, "counts", key_type="int64")
    publisher.put(1, {"n": 1})
    assert publisher.publish().version == 1
    assert publisher.publish().outcome == "noop"
    value = {"n": 2}
    publisher.put(2, value)
    value["n"] = 99  # the value given is the one published
    assert publisher.publish().version == 2 and rows_of(store, "counts")[2] == {"key": 2, "n": 2}
    with pytest.raises(ConfigError, match=r"put\(3, \.\.\.\): the value is a int"):
        publisher.put(3, 3)  # type: ignore[arg-type]
    publisher.put("x", {"n": 3})
    with pytest.raises(BadRecordError, match="change 1 given to the IncrementalPublisher \\(key 'x'\\): key 'x' is "
                                             "not a 64-bit integer"):
        publisher.publish()
    assert announced(store, "counts") == 2
