"""Whole states in table files: Parquet, Arrow IPC (file or stream format) and CSV, a record batch at a time.

The file is read from its start every cycle (a whole state, ``whole_state``)
and never held whole: Parquet by record batches of its row groups, IPC files
memory-mapped batch by batch, CSV by blocks through Arrow's streaming reader.
So a state larger than memory in its source form still publishes (the
producer's own state is columnar and compressed). A CSV's key column (and a
compound key's string fields) is read as text, whatever it looks like
(``007`` stays ``007``), and converted by the key type's rule; its other
columns take the types Arrow's reader infers from the first block.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from combe.format.errors import SourceError
from combe.format.keys import key_fields

from .base import Positions, Rows, Source

# Rows per record batch handed to the cycle: large enough for the decode's column work, small next to a state.
BATCH_ROWS = 64 * 1024
# CSV bytes per block (Arrow's reader infers column types from the first).
CSV_BLOCK = 16 << 20
TABLE_KINDS = {".parquet": "Parquet", ".pq": "Parquet", ".arrow": "Arrow IPC", ".feather": "Arrow IPC",
               ".ipc": "Arrow IPC", ".arrows": "Arrow IPC", ".csv": "CSV"}


def table_kind(path: str) -> str | None:
    """The table format a file's suffix names, or None (a JSONL or kcat-style changelog)."""
    return TABLE_KINDS.get(Path(path).suffix.lower())


class TableFileSource(Source):
    """A Parquet, Arrow IPC or CSV file holding a whole state: a row per key, the key field among its columns."""

    whole_state = True

    def __init__(self, uri: str, *, key_field: str = "key", key_type: str = "string", **_: object) -> None:
        """Options meant for other sources are ignored."""
        self.uri = uri
        self.path = Path(uri.removeprefix("file://")).expanduser().absolute()
        kind = table_kind(str(self.path))
        if kind is None:
            raise SourceError(f"{self.path}: not a Parquet (.parquet), Arrow IPC (.arrow, .feather) or CSV (.csv) "
                              "file", source=uri)
        self.kind = kind
        self.stream = str(self.path)
        self.key_field = key_field
        # A CSV's key column, and a compound key's string fields, are text whatever they look like.
        self.text_columns = [key_field, *(name for name, type_ in key_fields(key_type) if type_ == "string")]
        self.no_key_hint = f"the row's {key_field!r} column is null"
        if not self.path.is_file():
            raise SourceError(f"source file {self.path} does not exist or is not a file", source=uri)

    def describe(self, stream: str, partition: int, offset: int) -> str:
        return f"{stream} row {offset}"

    def read(self, positions: Positions) -> Iterator[Rows]:
        """Every row, from the start (a whole state resumes from nowhere: ``positions`` are not used)."""
        first = 1
        try:
            for batch in self._batches():
                if batch.num_rows:
                    yield Rows(self.stream, batch, first)
                    first += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"reading {self.path} as {self.kind} failed near row {first}: {exc}",
                              source=self.uri) from exc

    def _batches(self) -> Iterator[pa.RecordBatch]:
        if self.kind == "Parquet":
            import pyarrow.parquet as pq

            with pq.ParquetFile(self.path) as parquet:
                yield from parquet.iter_batches(batch_size=BATCH_ROWS)
        elif self.kind == "CSV":
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(self.path, read_options=pcsv.ReadOptions(block_size=CSV_BLOCK),
                                   convert_options=pcsv.ConvertOptions(
                                       column_types=dict.fromkeys(self.text_columns, pa.string())))
            with reader:
                yield from reader
        else:
            with pa.memory_map(str(self.path)) as mapped:
                try:
                    ipc = pa.ipc.open_file(mapped)
                except pa.ArrowInvalid:  # not the file format: the stream format, then
                    mapped.seek(0)
                    with pa.ipc.open_stream(mapped) as stream:
                        yield from stream
                    return
                for index in range(ipc.num_record_batches):
                    yield ipc.get_batch(index)
