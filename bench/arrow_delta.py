"""The other ways of doing the producer's work, one whole process each, as a user would write them.

    python -m bench.arrow_delta read-json CHANGELOG            # Arrow's JSON reader, the whole file
    python -m bench.arrow_delta write CHANGELOG TABLE_DIR      # ... then deltalake.write_deltalake
    python -m bench.arrow_delta merge CHANGES TABLE_DIR        # DeltaTable.merge of a change file

Each prints one JSON line of counts, which the harness checks against what
combe did with the same files (so a fast wrong answer is caught). The file
is a changelog of ``{"key": ..., "value": {...} | null}`` lines
(bench/data.py's ``write_products``): the table written holds the key and
the value's fields as columns, combe's snapshot table. The merge upserts
every change with a value and deletes every key whose value is null, in one
``MERGE``; the change file holds one change per key, as the latest changes of
a cycle do. Modules are imported inside each command, so the JSON reader's
time includes importing pyarrow only, not deltalake.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

KEY = "key"
DELETED = "_deleted"


def _read(path: str, value_type: Any = None) -> Any:
    """The changelog as a table: the key and one column per value field, and whether each value is null."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    options = None
    if value_type is not None:  # the change file: read it with the table's own types
        options = pj.ParseOptions(explicit_schema=pa.schema([(KEY, pa.string()), ("value", value_type)]))
    changelog = pj.read_json(path, parse_options=options)
    values = changelog.column("value")
    # flatten() gives the fields of a null value as nulls, so a tombstone's row is the key and nulls.
    fields = [pa.chunked_array([chunk.flatten()[i] for chunk in values.chunks], field.type)
              for i, field in enumerate(values.type)]
    return pa.table([changelog.column(KEY), *fields, pc.is_null(values)],
                    names=[KEY, *(field.name for field in values.type), DELETED])


def read_json(path: str) -> dict[str, Any]:
    import pyarrow.json as pj

    return {"rows": pj.read_json(path).num_rows}


def write(path: str, table_dir: str) -> dict[str, Any]:
    from deltalake import write_deltalake

    table = _read(path)
    table = table.drop_columns([DELETED])
    write_deltalake(table_dir, table)
    return {"rows": table.num_rows}


def merge(path: str, table_dir: str) -> dict[str, Any]:
    import pyarrow as pa
    from deltalake import DeltaTable

    target = DeltaTable(table_dir)
    schema = pa.schema(target.schema().to_arrow())
    value_fields = [field for field in schema if field.name != KEY]
    changes = _read(path, pa.struct(value_fields))
    columns = {field.name: f"s.{field.name}" for field in value_fields}
    metrics = (target.merge(changes, predicate=f"t.{KEY} = s.{KEY}", source_alias="s", target_alias="t")
               .when_matched_delete(predicate=f"s.{DELETED}")
               .when_matched_update(updates=columns)
               .when_not_matched_insert(updates={KEY: f"s.{KEY}", **columns}, predicate=f"NOT s.{DELETED}")
               .execute())
    return {"inserted": metrics["num_target_rows_inserted"], "updated": metrics["num_target_rows_updated"],
            "deleted": metrics["num_target_rows_deleted"]}


COMMANDS: dict[str, Callable[..., dict[str, Any]]] = {"read-json": read_json, "write": write, "merge": merge}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](*sys.argv[2:])))
