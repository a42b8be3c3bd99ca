"""Compound keys of whole states taken from the rows' own fields: ``--key-field tenant,id`` and
``publish_state(..., key=("tenant", "id"))``."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from combe import BadRecordError, ConfigError, Consumer, Dataset, publish_state
from combe.cli import main

KEY = "struct<tenant:int64,id:string>"
ROWS = [{"tenant": 7, "id": "x", "n": 1}, {"tenant": 7, "id": "007", "n": 2}, {"tenant": 8, "id": "x", "n": 3}]


def publish_file(path: Path, store: Path, *extra: str) -> int:
    return main(["publish", "--source", str(path), "--full-state", "--key-field", "tenant,id", *extra,
                 "--store", str(store), "--dataset", "d", "--once"])


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_file_publishes_a_compound_key_of_its_rows_fields(tmp_path: Path, suffix: str) -> None:
    path, store = tmp_path / f"state{suffix}", tmp_path / "store"

    def write(rows: list[dict[str, object]]) -> None:
        table = pa.Table.from_pylist(rows)
        pq.write_table(table, path, row_group_size=2) if suffix == ".parquet" else pcsv.write_csv(table, path)

    write(ROWS)
    assert publish_file(path, store, "--key-type", KEY) == 0
    write(ROWS[:2] + [{"tenant": 9, "id": "q", "n": 4}])
    assert publish_file(path, store, "--key-type", KEY) == 0
    with Consumer(str(store), "d") as consumer:
        assert consumer.version == 2
        # The key's fields stay columns beside the stored key; a CSV's "007" stays text.
        assert consumer.get((7, "x")) == {"key": '[7,"x"]', "tenant": 7, "id": "x", "n": 1}
        assert consumer.get({"tenant": 7, "id": "007"})["n"] == 2
        assert consumer.get((8, "x")) is None and consumer.get((9, "q"))["n"] == 4


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_row_with_a_null_key_field_is_a_bad_record_naming_it(tmp_path: Path, suffix: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path, store = tmp_path / f"state{suffix}", tmp_path / "store"
    table = pa.Table.from_pylist(ROWS + [{"tenant": None, "id": "y", "n": 5}])
    pq.write_table(table, path) if suffix == ".parquet" else pcsv.write_csv(table, path)
    assert publish_file(path, store, "--key-type", KEY) != 0
    err = capsys.readouterr().err
    assert f"{path} row 4" in err and "'tenant' is absent or null" in err, err
    assert Dataset.open(str(store), "d").announced().version is None


def test_the_key_fields_need_a_key_type_that_names_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "state.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert publish_file(path, tmp_path / "store") != 0
    assert "give its type" in capsys.readouterr().err
    assert publish_file(path, tmp_path / "store", "--key-type", "struct<id:string,tenant:int64>") != 0
    assert "not the fields of key type" in capsys.readouterr().err


def test_publish_state_takes_the_key_fields_as_a_tuple(tmp_path: Path) -> None:
    store = str(tmp_path)
    assert publish_state(store, "d", ROWS, key=("tenant", "id"), key_type=KEY).version == 1
    second = publish_state(store, "d", pa.Table.from_pylist(ROWS[1:]), key=("tenant", "id"), key_type=KEY)
    assert (second.version, second.removed) == (2, 1)
    with Consumer(store, "d") as consumer:
        assert consumer.get((7, "x")) is None
        assert consumer.get((7, "007")) == {"key": '[7,"007"]', "tenant": 7, "id": "007", "n": 2}
    for rows in ([{"tenant": 7, "n": 1}], [{"tenant": 7, "id": None, "n": 1}]):
        with pytest.raises(BadRecordError, match="row 1 of the data given to publish_state: .*'id' is absent or null"):
            publish_state(store, "d", rows, key=("tenant", "id"), key_type=KEY)
    with pytest.raises(ConfigError, match="give its type"):
        publish_state(store, "d", ROWS, key=("tenant", "id"))
    assert Dataset.open(store, "d").announced().version == 2


def test_dataframes_give_the_key_fields_as_columns_or_a_pandas_index(tmp_path: Path) -> None:
    pandas, polars = pytest.importorskip("pandas"), pytest.importorskip("polars")
    store = str(tmp_path)
    frames = {"pandas": pandas.DataFrame(ROWS), "pandas_index": pandas.DataFrame(ROWS).set_index(["tenant", "id"]),
              "polars": polars.DataFrame(ROWS)}
    for name, frame in frames.items():
        assert publish_state(store, name, frame, key=("tenant", "id"), key_type=KEY).added == 3, name
        with Consumer(store, name) as consumer:
            assert consumer.get((7, "007")) == {"key": '[7,"007"]', "tenant": 7, "id": "007", "n": 2}, name
