"""Whole states in files, through ``combe publish --full-state``: Parquet, Arrow IPC, CSV and JSONL rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from combe import ConfigError, Consumer, Dataset, open_source
from combe.cli import main
from combe.producer.sources import Rows, tables

STATE = pa.table({"id": ["007", "b", "c", "d"], "title": ["Alien", "Heat", "Up", "Ran"],
                  "year": pa.array([1979, 1995, 2009, 1985], pa.int32())})


def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, row_group_size=2)


def write_ipc_file(table: pa.Table, path: Path) -> None:
    feather.write_feather(table, path, chunksize=2)


def write_ipc_stream(table: pa.Table, path: Path) -> None:
    with pa.ipc.new_stream(path, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)


def write_jsonl(table: pa.Table, path: Path) -> None:
    # No newline after the last row: a whole state's last line is a row all the same.
    path.write_text("\n".join(json.dumps(row) for row in table.to_pylist()))


WRITERS: dict[str, tuple[str, Callable[[pa.Table, Path], None]]] = {
    "parquet": (".parquet", write_parquet), "ipc file": (".arrow", write_ipc_file),
    "ipc stream": (".arrows", write_ipc_stream), "csv": (".csv", pcsv.write_csv), "jsonl": (".jsonl", write_jsonl),
}


def publish(source: Path, store: Path, *more: str) -> int:
    return main(["publish", "--source", str(source), "--full-state", "--key-field", "id", "--store", str(store),
                 "--dataset", "movies", "--once", *more])


def rows_of(store: Path) -> dict[str, dict[str, Any]]:
    with Consumer(str(store), "movies") as consumer:
        return {row["id"]: row for row in consumer.view().table.to_pylist()}


@pytest.mark.parametrize("kind", WRITERS)
def test_each_file_format_publishes_a_whole_state_and_infers_deletions(tmp_path: Path, kind: str) -> None:
    suffix, write = WRITERS[kind]
    source, store = tmp_path / f"state{suffix}", tmp_path / "store"
    write(STATE, source)
    assert publish(source, store) == 0
    assert rows_of(store) == {row["id"]: row for row in STATE.to_pylist()}  # a CSV key keeps its text: 007

    # The next state: d is gone, e is new, b changed; c and 007 as they were.
    write(pa.table({"id": ["007", "b", "c", "e"], "title": ["Alien", "Heat!", "Up", "Ikiru"],
                    "year": pa.array([1979, 1995, 2009, 1952], pa.int32())}), source)
    assert publish(source, store, "--json") == 0
    manifest = Dataset.open(str(store), "movies").manifest(2)
    assert {name: manifest.changes[name] for name in ("added", "updated", "removed", "unchanged")} == \
        {"added": 1, "updated": 1, "removed": 1, "unchanged": 2}
    assert set(rows_of(store)) == {"007", "b", "c", "e"} and rows_of(store)["b"]["title"] == "Heat!"

    assert publish(source, store) == 0  # unchanged: nothing published
    assert Dataset.open(str(store), "movies").announced().version == 2


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_truncated_file_is_refused(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    suffix, write = WRITERS[kind]
    source, store = tmp_path / f"state{suffix}", tmp_path / "store"
    write(STATE, source)
    assert publish(source, store) == 0
    write(STATE.slice(0, 1), source)
    assert publish(source, store) != 0
    assert "it would remove 3 of 4 records (75%), above --max-removed" in capsys.readouterr().err
    assert Dataset.open(str(store), "movies").announced().version == 1 and len(rows_of(store)) == 4


def test_a_key_given_twice_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "state.parquet"
    write_parquet(pa.concat_tables([STATE, STATE.slice(2, 1)]), source)
    assert publish(source, tmp_path / "store") != 0
    assert "key 'c' appears 2 times; a whole state holds each key once" in capsys.readouterr().err


def test_files_are_read_a_batch_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never whole: each batch is handed to the cycle on its own (so a state larger than memory in its
    source form still publishes)."""
    monkeypatch.setattr(tables, "BATCH_ROWS", 2)
    monkeypatch.setattr(tables, "CSV_BLOCK", 32)  # a row or two a block
    for kind in ("parquet", "ipc file", "ipc stream", "csv"):
        suffix, write = WRITERS[kind]
        source = tmp_path / f"state{suffix}"
        write(STATE, source)
        with open_source(str(source), full_state=True, key_field="id") as opened:
            chunks = list(opened.read({}))
        assert all(isinstance(chunk, Rows) for chunk in chunks)
        assert len(chunks) > 1 and [chunk.first_row for chunk in chunks][0] == 1, kind
        assert sum(len(chunk.rows) for chunk in chunks) == 4, kind


def test_files_that_cannot_be_read_as_a_whole_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parquet = tmp_path / "state.parquet"
    parquet.write_bytes(b"PAR1 not really")
    assert publish(parquet, tmp_path / "store") != 0
    assert f"reading {parquet} as Parquet failed" in capsys.readouterr().err

    write_parquet(STATE, parquet)
    assert main(["publish", "--source", str(parquet), "--store", str(tmp_path / "store"), "--dataset", "movies",
                 "--once"]) == 2
    assert "is a Parquet file, which holds a whole state rather than changes: publish it with --full-state" in \
        capsys.readouterr().err

    with pytest.raises(ConfigError, match="a kafka source is a changelog"):
        open_source("kafka://127.0.0.1:9/topic", full_state=True)

    csv = tmp_path / "state.csv"
    csv.write_text("id,title\n007,Alien\n,Heat\n")
    assert publish(csv, tmp_path / "store") != 0
    assert f"it would add 1 record(s) with a null or empty key (the first at {csv} row 2)" in \
        capsys.readouterr().err

    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"id": "a", "title": "Alien"}\n{"title": "Heat"}\n')
    assert publish(jsonl, tmp_path / "store") != 0
    assert f"{jsonl} line 2: the row has no 'id' field (the key)" in capsys.readouterr().err
    assert Dataset.open(str(tmp_path / "store"), "movies").announced().version is None


def test_a_sharded_dataset_takes_a_whole_state_each_shard_its_keys(tmp_path: Path) -> None:
    source, store = tmp_path / "state.parquet", tmp_path / "store"
    write_parquet(STATE, source)
    assert publish(source, store, "--shard-count", "2") == 0
    write_parquet(STATE.filter(pa.array([True, True, False, True])), source)  # c is gone
    assert publish(source, store, "--shard-count", "2", "--no-max-removed") == 0
    assert set(rows_of(store)) == {"007", "b", "d"}
