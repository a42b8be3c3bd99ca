"""Whole states: a source that gives the entire state each cycle, and deletions inferred from what it lacks.

Hollow's default producer works this way: a job hands over everything it
holds, and a key the announced version has but the new state lacks is
removed. Pure, on Arrow arrays: the new state's keys are checked for
duplicates (a hash of them), and the announced keys missing from them (a
set difference, ``is_in``) are folded as tombstones, so the rest of the cycle
(fold, checks, validators, compare-and-swap) is a changelog cycle's. The
removal validator (``max_removed``) is what refuses an empty or truncated
input: it would read as the removal of most keys.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from combe.format.errors import ConfigError, SourceError
from combe.format.types import arrow_type

from .fold import DELETED, Changes
from .records import RecordFormat
from .state import State


def check_whole_state_options(fmt: RecordFormat, on_bad_record: str) -> None:
    """A whole state's rows are objects of columns, and none may be skipped: a skipped row would read as the
    deletion of its key."""
    if fmt.value_format != "json":
        raise ConfigError(f"value_format={fmt.value_format!r}: a whole state's rows are objects of columns; "
                          "publish it with value_format json")
    if on_bad_record != "fail":
        raise ConfigError(f"on_bad_record={on_bad_record!r}: a row skipped from a whole state would read as the "
                          "deletion of its key; a whole state is published with on_bad_record fail")


def remove_missing(changes: Changes, previous: State, source: str) -> None:
    """Refuse a key given twice; add a tombstone for each key of ``previous`` that ``changes`` lacks."""
    schema = changes.schema
    key_type = arrow_type(schema.key_type)
    keys = pa.chunked_array([part.column(schema.key_field) for part in changes.parts], key_type)
    unique = pc.unique(keys)
    if len(unique) != len(keys):
        counts = pc.value_counts(keys)
        twice = counts.filter(pc.greater(counts.field("counts"), 1))[0]
        raise SourceError(f"{source}: key {twice['values'].as_py()!r} appears {twice['counts'].as_py()} times; a "
                          "whole state holds each key once. Nothing was published.", source=source)
    del keys
    announced = previous.keys()
    gone = announced.filter(pc.invert(pc.is_in(announced, value_set=unique)))
    if len(gone):
        changes.add(pa.table({schema.key_field: gone.cast(key_type),
                              DELETED: pa.array(np.ones(len(gone), np.bool_))}))
