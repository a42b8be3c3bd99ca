"""What a server checks before it serves: its datasets exist, and the fields it indexes can be queried.

``combe serve`` runs ``check_datasets`` before it starts any worker, so a
misspelt dataset or field is an error at once, naming what exists, rather
than a server that waits for a dataset that will never come or silently
answers 400 to every query on a field. A store that cannot be reached is no
such error: the datasets then load in the background, retried, as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from combe.format.dataset import Dataset
from combe.format.errors import CombeError, ConfigError, DatasetNotFound
from combe.format.schema import Schema
from combe.format.types import NESTED, list_item, map_types, struct_fields
from combe.format.types import kind as kind_of

from ..sharded import held_shards

log = logging.getLogger(__name__)

# Scalar column types a query can match from a URL.
QUERYABLE_SCALARS = ("string", "int64", "float64", "bool")


def equality_only(kind: str) -> bool:
    """Whether a column of this type is matched by equality only, its value written as JSON in the URL."""
    return kind == "json" or kind_of(kind) in NESTED


def queryable(kind: str) -> bool:
    """Whether /query can match a column of this type: the scalars but binary and null, json columns, and
    nested columns whose values JSON can spell (no binary inside)."""
    if kind in QUERYABLE_SCALARS or kind == "json":
        return True
    head = kind_of(kind)
    if head == "list":
        return _spelled_in_json(list_item(kind))
    if head == "map":
        return _spelled_in_json(map_types(kind)[1])
    if head == "struct":
        return all(_spelled_in_json(field_type) for _, field_type in struct_fields(kind))
    return False


def _spelled_in_json(kind: str) -> bool:
    return kind == "null" or queryable(kind)


def check_datasets(store: str, names: Sequence[str], index: Sequence[str],
                   storage_options: dict[str, Any] | None = None, shards: Collection[int] | None = None) -> None:
    """DatasetNotFound for a dataset the store says is absent; ConfigError for a field that cannot be indexed,
    or for ``shards`` that a dataset does not have (or an unsharded dataset with ``shards``)."""
    schemas: dict[str, Schema] = {}
    for name in names:
        dataset = Dataset.open(store, name, storage_options)
        try:
            pointer = dataset.require_announced()
        except DatasetNotFound:
            raise DatasetNotFound(f"dataset {name!r} does not exist in {store}: it has no announced version at "
                                  f"{dataset.url}; check its name, or publish it first", dataset=name) from None
        except CombeError as exc:
            log.warning("dataset %s: cannot check it before serving (%s); it will be loaded in the background",
                        name, exc)
            continue
        if pointer.shard_count is None and shards is not None:
            raise ConfigError(f"dataset {name!r} is not sharded: serve it whole, or from another server than the "
                              "one holding some shards")
        if pointer.shard_count is not None:
            held_shards(shards, pointer.shard_count, name)
        try:
            schemas[name] = (dataset.manifest(pointer.serving) if pointer.shard_count is None
                             else dataset.sharded_manifest(pointer.serving)).schema
        except CombeError as exc:
            log.warning("dataset %s: cannot read its schema before serving (%s)", name, exc)
    check_index(index, schemas, every_schema=len(schemas) == len(names))


def check_index(index: Sequence[str], schemas: Mapping[str, Schema], *, every_schema: bool = True) -> None:
    """ConfigError for a field that some dataset holds in a type no query can match, or (when ``schemas`` has
    every served dataset) that no dataset has."""
    for field in index:
        kinds = {name: _kind(schema, field) for name, schema in schemas.items()}
        wrong = {name: kind for name, kind in kinds.items() if kind is not None and not queryable(kind)}
        if wrong or (every_schema and not any(kinds.values())):
            why = (", ".join(f"it holds {kind} values in {name}" for name, kind in wrong.items()) if wrong
                   else f"no dataset served has a column {field!r}")
            raise ConfigError(f"cannot index {field!r}: {why}; indexable fields: {indexable(schemas)}")


def indexable(schemas: Mapping[str, Schema]) -> str:
    """Each dataset's fields that can be indexed, for messages."""
    return "; ".join(f"{name}: {', '.join(f for f in schema.columns if queryable(schema.columns[f])) or '-'}"
                     for name, schema in schemas.items())


def _kind(schema: Schema, field: str) -> str | None:
    if field == schema.key_field:
        return schema.key_stored
    return schema.columns.get(field)
