"""Checks a new version must pass before it is announced.

A bad publish reaches every consumer at once, so the producer refuses a
version that looks like an accident: a cycle that removes or adds a large
share of the records, leaves too few, or brings in an empty key. Those
built-in limits are on by default (``Limits``); each can be turned off.

A custom validator is any callable taking a ValidationContext
(``--validator module:function``). Raising anything refuses the version with
the exception's message; then nothing is announced.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from combe.format.delta import ADDED, OP_COLUMN
from combe.format.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from .fold import FoldResult


@dataclass(frozen=True)
class ValidationContext:
    """What a validator may look at: the counts, and the new state and delta tables.

    ``previous_count`` is None for the first version of a dataset: there is
    nothing to compare a share with.
    """

    dataset: str
    version: int
    previous_count: int | None
    result: FoldResult

    @property
    def new_count(self) -> int:
        return self.result.record_count


Validator = Callable[[ValidationContext], None]


def percent(share: float) -> str:
    return f"{share * 100:.4g}%"


def refuse(context: ValidationContext, validator: str, reason: str) -> ValidationError:
    """The error for a refused version: what was measured, against which limit, and that nothing was announced."""
    return ValidationError(f"{context.dataset} version {context.version} was not announced: {reason}",
                           dataset=context.dataset, version=context.version, validator=validator)


# What a cycle that removes or adds records would do, as a refusal says it: (count, previous) -> text.
_WOULD = {
    "removed": lambda count, previous: f"it would remove {count} of {previous} records",
    "added": lambda count, previous: f"it would add {count} records to {previous}",
}


@dataclass(frozen=True)
class MaxShare:
    """Refuse a cycle whose ``change`` (``"removed"`` or ``"added"`` records) is more than ``share`` of the
    previous version's records, once that version has ``floor`` records: below it a dataset is still being
    filled, and any growth is normal."""

    change: str
    share: float
    floor: int = 0

    @property
    def name(self) -> str:
        return f"max_{self.change}"

    def __call__(self, context: ValidationContext) -> None:
        previous, count = context.previous_count, getattr(context.result, self.change)
        if previous and previous >= self.floor and count / previous > self.share:
            raise refuse(context, self.name,
                         f"{_WOULD[self.change](count, previous)} ({percent(count / previous)}), above "
                         f"{self.name}={percent(self.share)}. If that is intended, publish with a higher "
                         f"{self.name}, or {self.name}=None to turn the limit off.")


@dataclass(frozen=True)
class MinRecords:
    """Refuse a version with fewer than ``count`` records (an empty or truncated source)."""

    count: int
    name = "min_records"

    def __call__(self, context: ValidationContext) -> None:
        if context.new_count < self.count:
            raise refuse(context, self.name,
                         f"it would hold {context.new_count} records, below min_records={self.count}.")


@dataclass(frozen=True)
class NoEmptyKeys:
    """Refuse records whose key is null or the empty string: almost always a producer bug upstream."""

    name = "allow_empty_keys"

    def __call__(self, context: ValidationContext) -> None:
        delta = context.result.delta
        # Masks over the key column, never a copy of it: a first version's delta is the whole state.
        keys = delta.column(context.result.schema.key_field)
        empty = pc.is_null(keys)
        if pa.types.is_string(keys.type):
            empty = pc.or_kleene(empty, pc.equal(pc.binary_length(keys), 0))
        count = pc.sum(pc.and_kleene(empty, pc.equal(delta.column(OP_COLUMN), ADDED))).as_py() or 0
        if count:
            places = context.result.empty_keys
            where = f" (the first at {'; '.join(places)})" if places else ""
            raise refuse(context, self.name,
                         f"it would add {count} record(s) with a null or empty key{where}. Fix the producer of "
                         "the source, or publish with allow_empty_keys.")


@dataclass(frozen=True)
class Limits:
    """The built-in validators' settings; None (or 0 for ``min_records``) turns one off.

    ``added_floor``: the share of records added is only checked once the
    previous version has at least this many records.
    """

    max_removed: float | None = 0.5
    max_added: float | None = 1.0
    added_floor: int = 100
    min_records: int = 0
    allow_empty_keys: bool = False

    def __post_init__(self) -> None:
        for name, share in (("max_removed", self.max_removed), ("max_added", self.max_added)):
            if share is not None and share < 0:
                raise ConfigError(f"{name}={share}: a share must be 0 or more (0.5 is a half)")
        for name, count in (("min_records", self.min_records), ("added_floor", self.added_floor)):
            if count < 0:
                raise ConfigError(f"{name}={count}: a record count must be 0 or more")

    def validators(self) -> list[Validator]:
        found: list[Validator] = []
        if self.max_removed is not None:
            found.append(MaxShare("removed", self.max_removed))
        if self.max_added is not None:
            found.append(MaxShare("added", self.max_added, self.added_floor))
        if self.min_records:
            found.append(MinRecords(self.min_records))
        if not self.allow_empty_keys:
            found.append(NoEmptyKeys())
        return found


def validator_name(validator: Validator) -> str:
    name = getattr(validator, "name", None)
    if isinstance(name, str):
        return name
    module = getattr(validator, "__module__", None)
    qualname = getattr(validator, "__qualname__", None) or type(validator).__qualname__
    return f"{module}:{qualname}" if module else qualname


def run_validators(validators: list[Validator], context: ValidationContext) -> None:
    """Run each validator in order; the first that raises refuses the version."""
    for validator in validators:
        try:
            validator(context)
        except ValidationError:
            raise
        except Exception as exc:  # noqa: BLE001 - any exception from a custom validator is its refusal
            name = validator_name(validator)
            reason = str(exc) or type(exc).__name__
            raise refuse(context, name, f"validator {name} refused it: {reason}") from exc


def load_validator(spec: str) -> Validator:
    """The callable ``module:function`` names; the module must be importable."""
    module_name, found, attribute = spec.partition(":")
    if not found or not module_name or not attribute:
        raise ConfigError(f"validator {spec!r}: expected module:function, e.g. checks.validators:no_drop")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"validator {spec!r}: cannot import {module_name!r} ({exc}); "
                          "put its directory on PYTHONPATH") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"validator {spec!r}: module {module_name!r} has no {attribute!r}") from None
    if not callable(target):
        raise ConfigError(f"validator {spec!r}: {attribute!r} is not callable")
    return target
