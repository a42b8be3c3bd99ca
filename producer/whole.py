"""Whole states: a source that gives the entire state each cycle, and deletions inferred from what it lacks.

Hollow's default producer works this way: a job hands over everything it
holds, and a key the announced version has but the new state lacks is
removed. Pure, on Arrow arrays: the announced keys missing from the new
state's (a set difference, ``is_in``) are folded as tombstones, a key the new
state gives twice is refused by the fold's sort, so the rest of the cycle
(fold, checks, validators, compare-and-swap) is a changelog cycle's. The
removal validator (``max_removed``) is what refuses an empty or truncated
input: it would read as the removal of most keys.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from combe.format.errors import ConfigError
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
    """Add a tombstone for each key of ``previous`` that ``changes`` lacks, and have the fold refuse a key given
    twice (``Changes.once``: the fold's sort by key finds repeats for free)."""
    schema = changes.schema
    changes.once = source
    announced = previous.keys()
    if not len(announced):
        return
    key_type = arrow_type(schema.key_stored)
    given = pa.chunked_array([part.column(schema.key_field) for part in changes.parts], key_type).combine_chunks()
    gone = announced.filter(pc.invert(pc.is_in(announced, value_set=given)))
    del given
    if len(gone):
        changes.add(pa.table({schema.key_field: gone.cast(key_type), DELETED: pa.array(np.ones(len(gone), np.bool_))}))
