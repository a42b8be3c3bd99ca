"""combe: publish a compacted Kafka topic as versioned snapshots and deltas; read them at dict speed.

The public names are re-exported here and imported on first use, so a read
service that only uses the consumer never imports the producer (or Kafka).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from combe.consumer import Consumer, Diff, KeyHistory, Timeline, View, register_metrics
    from combe.format import Dataset, Manifest, Schema, Store, open_store
    from combe.format.errors import (BadRecordError, CombeError, ConfigError, ConflictError, DatasetNotFound,
                                     DatasetNotReady, FormatError, Forbidden, IntegrityError, KeyTypeError,
                                     ObjectNotFound, RecordNotFound, RequestError, RequestTooLarge, ShardNotHeld,
                                     SignatureError, SourceError, StoreError, StoreUnavailable, Unauthorized,
                                     UnsupportedStore, ValidationError, VersionNotAvailable, VersionNotReached)
    from combe.producer import (CycleResult, IncrementalPublisher, PublishOptions, Publisher, RecordFormat, Source,
                                open_source, publish_state)

_ERRORS = "combe.format.errors"
_EXPORTS: dict[str, str] = {
    "BadRecordError": _ERRORS, "CombeError": _ERRORS, "ConfigError": _ERRORS, "ConflictError": _ERRORS,
    "Consumer": "combe.consumer", "CycleResult": "combe.producer", "Dataset": "combe.format",
    "Diff": "combe.consumer", "KeyHistory": "combe.consumer", "Timeline": "combe.consumer",
    "DatasetNotFound": _ERRORS, "DatasetNotReady": _ERRORS, "FormatError": _ERRORS, "Forbidden": _ERRORS,
    "IncrementalPublisher": "combe.producer", "IntegrityError": _ERRORS, "KeyTypeError": _ERRORS,
    "Manifest": "combe.format", "ObjectNotFound": _ERRORS, "PublishOptions": "combe.producer",
    "Publisher": "combe.producer", "RecordFormat": "combe.producer", "RecordNotFound": _ERRORS,
    "RequestError": _ERRORS, "RequestTooLarge": _ERRORS, "Schema": "combe.format", "ShardNotHeld": _ERRORS,
    "SignatureError": _ERRORS, "Source": "combe.producer",
    "SourceError": _ERRORS, "Store": "combe.format", "StoreError": _ERRORS, "StoreUnavailable": _ERRORS,
    "Unauthorized": _ERRORS, "UnsupportedStore": _ERRORS, "ValidationError": _ERRORS,
    "VersionNotAvailable": _ERRORS, "VersionNotReached": _ERRORS, "View": "combe.consumer",
    "open_source": "combe.producer", "open_store": "combe.format", "publish_state": "combe.producer",
    "register_metrics": "combe.consumer",
}

# A literal list, so linters and IDEs read the public names without running this module; each one is
# imported from the module _EXPORTS names (tests/test_public_api.py checks the two agree and stay sorted).
__all__ = [
    "BadRecordError", "CombeError", "ConfigError", "ConflictError", "Consumer", "CycleResult", "Dataset",
    "DatasetNotFound", "DatasetNotReady", "Diff", "Forbidden", "FormatError", "IncrementalPublisher",
    "IntegrityError", "KeyHistory", "KeyTypeError", "Manifest", "ObjectNotFound", "PublishOptions", "Publisher",
    "RecordFormat", "RecordNotFound", "RequestError", "RequestTooLarge", "Schema", "ShardNotHeld", "SignatureError",
    "Source", "SourceError", "Store", "StoreError", "StoreUnavailable", "Timeline", "Unauthorized",
    "UnsupportedStore", "ValidationError", "VersionNotAvailable", "VersionNotReached", "View", "open_source",
    "open_store", "publish_state", "register_metrics",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is used."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'combe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
