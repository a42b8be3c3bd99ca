"""The store-wide pin: hold every consumer of a dataset at one version (a rollback), or let them go.

The pin is the ``pin`` field of ``announced.json`` (format/manifest.py,
Pointer), so a consumer's poll stays one conditional request. It is set by
compare-and-swap with the announced version unchanged; a producer that
announces meanwhile makes the swap fail, and the pin is applied again on
top of its announcement (producers carry the pin over when they announce).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from combe.format.dataset import Dataset
from combe.format.errors import ConfigError, ConflictError, DatasetNotFound
from combe.format.manifest import Pointer

log = logging.getLogger(__name__)

ATTEMPTS = 5


def set_store_pin(dataset: Dataset, version: int | None) -> tuple[Pointer, int | None]:
    """Pin every consumer of ``dataset`` to ``version`` (None: unpin); the new pointer and the previous pin."""
    for _ in range(ATTEMPTS):
        announced = dataset.announced()
        pointer = announced.pointer
        if pointer is None:
            raise DatasetNotFound(f"dataset {dataset.name!r} has no announced version at {dataset.url}; "
                                  "there is nothing to pin", dataset=dataset.name)
        if version is not None:
            if not 1 <= version <= pointer.version:
                raise ConfigError(f"cannot pin {dataset.name} to version {version}: versions run from 1 to the "
                                  f"announced version {pointer.version}")
            dataset.manifest(version)  # DatasetNotFound if gc removed it: consumers could not load it
        if pointer.pin == version:
            return pointer, version
        pinned = replace(pointer, pin=version)
        if dataset.announce(pinned, announced.tag) is not None:
            log.info("%s: store-wide pin %s -> %s (announced version %d)", dataset.name, pointer.pin, version,
                     pointer.version)
            return pinned, pointer.pin
        log.info("%s: announcement moved while setting the pin; trying again", dataset.name)
    raise ConflictError(f"{dataset.name}: announced.json kept changing while setting the pin "
                        f"({ATTEMPTS} attempts); try again", dataset=dataset.name, version=version or 0)
