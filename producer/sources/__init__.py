"""Sources by URL scheme, imported only when used (Kafka needs the ``kafka`` extra)."""

from __future__ import annotations

import importlib
from typing import Any

from combe.format.errors import ConfigError

from .base import Chunk, Lines, Messages, Positions, Records, Rows, Source

# scheme -> (module, factory, extra to install)
_REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "file": ("combe.producer.sources.file", "open_file", None),
    "kafka": ("combe.producer.sources.kafka", "KafkaSource", "kafka"),
}


def open_source(uri: str, **options: Any) -> Source:
    """The Source for ``uri``: ``kafka://host:port/topic``, ``file://path``, a path, or ``-``.

    ``full_state=True`` reads a file as a whole state (a JSONL file's lines are rows); Parquet, Arrow IPC and
    CSV files are whole states and need it."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else "file"
    if scheme not in _REGISTRY:
        raise ConfigError(f"source {uri!r}: unknown scheme {scheme!r}; use kafka://host:port/topic, "
                          "file://path.jsonl, a path, or - for stdin")
    if options.get("full_state") and scheme != "file":
        raise ConfigError(f"source {uri!r}: a {scheme} source is a changelog; full_state reads a file (Parquet, "
                          "Arrow IPC, CSV or JSONL rows) or Python data (combe.publish_state)")
    module_name, factory, extra = _REGISTRY[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: pip install 'combe[{extra}]'" if extra else ""
        raise ConfigError(f"{scheme} sources need a package that is missing ({exc.name}){hint}") from exc
    source: Source = getattr(module, factory)(uri, **options)
    return source


__all__ = ["Chunk", "Lines", "Messages", "Positions", "Records", "Rows", "Source", "open_source"]
