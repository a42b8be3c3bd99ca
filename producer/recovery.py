"""Recovering a lost announcement: ``announced.json`` deleted while versions remain in ``versions/``.

Without it a producer would take the dataset for a new one and announce
version 1 again (its manifest exists, so it would be "adopted"), then one
more old version per run: every reader would go back. Instead the newest
version that still loads (every blob's sha256, the blobs against their
manifests, the record counts, the state checksum; load_state checks them all) is announced
again, and publishing continues after it.

A version above the recovered one that does not load keeps its number
taken (manifests are create-only), so no version can follow the recovered
one until it is repaired or removed: recovery then announces what it can
and fails, naming it. A store-wide pin lived in the lost ``announced.json``
and cannot be recovered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from combe.format.dataset import Announced, Dataset
from combe.format.errors import CombeError, FormatError
from combe.format.manifest import Pointer, utc_now

from .state import State, load_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    """The version announced again, its loaded state, and the announcement as it now stands."""

    version: int
    state: State
    announced: Announced


def recover_announcement(dataset: Dataset, producer_id: str) -> Recovered | None:
    """Announce the newest version that loads, if ``announced.json`` is missing but versions exist.

    None when the dataset has no manifest (a new dataset) or another producer
    announced meanwhile (the caller reads the announcement again).
    """
    versions = dataset.versions()
    if not versions:
        return None
    broken: list[str] = []
    for version in reversed(versions):
        try:
            manifest = dataset.manifest(version)
            state = load_state(dataset, manifest)
        except CombeError as exc:
            log.warning("%s: version %d does not load (%s); trying the one before", dataset.name, version, exc)
            broken.append(f"version {version}: {exc}")
            continue
        pointer = Pointer(dataset.name, version, utc_now(), producer_id)
        tag = dataset.announce(pointer, None)  # create-only: a producer that announced first wins
        if tag is None:
            return None
        log.warning("%s: announced.json was missing; announced version %d again, the newest of the %d versions "
                    "in %s/versions that loads (a store-wide pin, if one was set, is lost: set it again)",
                    dataset.name, version, len(versions), dataset.url)
        if broken:
            raise FormatError(f"{dataset.name}: announced.json was missing, so version {version} (the newest that "
                              f"loads) is announced again; publishing cannot go on while newer versions that do "
                              f"not load hold the next numbers: {'; '.join(broken)}. Repair or remove them.")
        return Recovered(version, state, Announced(pointer, tag))
    raise FormatError(f"{dataset.name}: announced.json is missing and none of the {len(versions)} versions in "
                      f"{dataset.url}/versions loads: {'; '.join(broken[:3])}")
