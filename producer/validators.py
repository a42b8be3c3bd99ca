"""Checks a new version must pass before it is announced.

A validator is a callable taking a ValidationContext; it refuses the version
by raising ValidationError (or any exception, which is wrapped into one), and
then nothing is announced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fold import FoldResult


@dataclass(frozen=True)
class ValidationContext:
    """What a validator may look at: the counts, and the new state and delta tables."""

    dataset: str
    version: int
    previous_count: int
    result: FoldResult

    @property
    def new_count(self) -> int:
        return self.result.state.num_rows


Validator = Callable[[ValidationContext], None]
