"""format/dataset.py: the one compare-and-swap loop on announced.json, used by producers and by the pin."""

from __future__ import annotations

from pathlib import Path

import pytest

from combe.format.dataset import ANNOUNCE_ATTEMPTS, Announced, Dataset
from combe.format.errors import ConflictError
from combe.format.manifest import Pointer, utc_now
from combe.producer.validators import ValidationContext
from tests.support.feed import Feed


def published(tmp_path: Path, versions: int = 2) -> Feed:
    feed = Feed(tmp_path)
    for v in range(1, versions + 1):
        feed.publish([(f"k{v}", {"v": v})])
    return feed


def test_a_pin_set_while_a_cycle_publishes_is_carried_over(tmp_path: Path) -> None:
    """The pin lands between the producer's read of announced.json and its swap: the swap is lost, then
    made again on top of the pin, which the new announcement keeps."""
    def pin_meanwhile(context: ValidationContext) -> None:
        if context.version == 3:
            feed.dataset.set_pin(1)

    feed = Feed(tmp_path, validators=[pin_meanwhile])
    feed.publish([("a", {"v": 1})])
    feed.publish([("b", {"v": 2})])
    before = feed.dataset.announced().tag
    assert feed.publish([("c", {"v": 3})]) == 3
    pointer = feed.dataset.announced().pointer
    assert pointer is not None and (pointer.version, pointer.pin) == (3, 1)
    assert feed.dataset.announced().tag != before


def test_an_update_that_needs_no_change_writes_nothing(tmp_path: Path) -> None:
    feed = published(tmp_path)
    before = feed.dataset.announced()
    assert feed.dataset.set_pin(None) == (before.pointer, None)
    assert feed.dataset.announced() == before


def test_every_lost_swap_is_decided_again_on_what_it_replaces(tmp_path: Path) -> None:
    feed = published(tmp_path)
    dataset = Dataset.open(feed.store, feed.name)
    seen: list[str] = []

    def change(announced: Announced) -> Pointer:
        # Another writer moves the announcement after each read: every swap this update tries is lost.
        assert announced.pointer is not None
        seen.append(announced.pointer.by)
        moved = Pointer(feed.name, announced.pointer.version, utc_now(), f"other {len(seen)}")
        assert dataset.announce(moved, announced.tag) is not None
        return Pointer(feed.name, announced.pointer.version, utc_now(), "this", None)

    with pytest.raises(ConflictError, match=f"kept changing while testing \\({ANNOUNCE_ATTEMPTS} attempts\\)"):
        dataset.update_announced(change, doing="testing")
    # Each attempt saw what the other writer wrote after the previous one.
    assert seen[1:] == [f"other {n}" for n in range(1, ANNOUNCE_ATTEMPTS)] and not seen[0].startswith("other")
    pointer = dataset.announced().pointer
    assert pointer is not None and pointer.by == f"other {ANNOUNCE_ATTEMPTS}"
