"""Settings declared once: a dataclass field carries its default, help and choices, and the CLI reads them.

``combe publish`` and ``combe serve`` build their flags from these tables
(``--snapshot-every`` from ``PublishOptions.snapshot_every``), so a default
is written in one place and the library and the command cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def setting(default: Any, help: str, *, choices: tuple[Any, ...] = (),
            parse: Callable[[str], Any] | None = None) -> Any:
    """A dataclass field that is also a documented setting; ``parse`` reads its flag's text (a ValueError is a
    usage error), else the type of the default does."""
    return field(default=default, metadata={"help": help, "choices": choices, "parse": parse})


@dataclass(frozen=True)
class Setting:
    """One setting as the CLI and the docs see it; ``kind`` reads its text (the type of its default, or its
    ``parse``)."""

    name: str
    kind: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[Any, ...] = ()


def settings_of(cls: type) -> list[Setting]:
    """The settings of a dataclass declared with ``setting()``, in declaration order (other fields left out)."""
    return [Setting(f.name, f.metadata["parse"] or type(f.default), f.default, f.metadata["help"],
                    f.metadata["choices"])
            for f in fields(cls) if "help" in f.metadata and f.default is not MISSING]
