"""The HTTP endpoint's settings, declared once: these fields drive ``create_app`` and ``combe serve``'s flags."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from combe.format.errors import ConfigError
from combe.format.settings import setting, settings_of


@dataclass(frozen=True)
class Settings:
    """Limits and timings of one server. Every field becomes a ``--flag`` of ``combe serve``."""

    batch_limit: int = setting(1000, "most keys one records:batchGet may ask for; more answers 413")
    max_body_bytes: int = setting(1 << 20, "largest request body accepted, in bytes; larger answers 413")
    page_size: int = setting(100, "items per page when a paged route gets no limit=")
    page_limit: int = setting(1000, "largest limit= a paged route accepts")
    refresh_interval: float = setting(10.0, "seconds between polls of each dataset's announcement")
    ready_wait: float = setting(20.0, "seconds a starting worker waits for its datasets before it accepts "
                                      "requests; any still loading then answer 503 until they load")
    min_version_wait: float = setting(5.0, "seconds a request with X-Combe-Min-Version waits for another "
                                           "request's refresh of its dataset before answering 503")
    index: tuple[str, ...] = setting((), "a field /query can match, in every dataset that has it (repeatable): "
                                         "string, int64, float64 and bool columns, json columns by equality; "
                                         "the key field always can")

    def __post_init__(self) -> None:
        for name in ("batch_limit", "max_body_bytes", "page_size", "page_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be 1 or more")
        if self.page_size > self.page_limit:
            raise ConfigError(f"page_size={self.page_size} must not exceed page_limit={self.page_limit}")
        if self.refresh_interval <= 0:
            raise ConfigError(f"refresh_interval={self.refresh_interval}: must be above 0 seconds")
        for name in ("ready_wait", "min_version_wait"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be 0 seconds or more")


def setting_help() -> list[tuple[str, Callable[[str], Any], Any, str]]:
    """(name, type, default, help) for every setting, in declaration order; tuple settings are repeatable flags."""
    return [(s.name, s.kind, s.default, s.help) for s in settings_of(Settings)]
