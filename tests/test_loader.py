"""Delta chains: past ``max_deltas`` deltas, or past its snapshot's bytes, a consumer loads a snapshot."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.feed import Feed, blob, record_reads, view_state


def test_after_max_deltas_a_newer_snapshot_is_loaded(tmp_path: Path) -> None:
    feed = Feed(tmp_path, snapshot_every=3, snapshot_ratio=100.0)  # snapshots at 1, 4, 7
    feed.publish([(f"k{i:03d}", {"n": i}) for i in range(500)])
    with feed.consumer(max_deltas=2) as short, feed.consumer() as long:
        short_reads, long_reads = record_reads(short), record_reads(long)
        for v in range(2, 6):
            feed.publish([(f"k{v:03d}", {"n": -v})])
            assert short.refresh() and long.refresh()
            assert view_state(short.view()) == view_state(long.view()) == feed.states[v]
        # Version 4 has a snapshot: the short chain takes it, the long one keeps adding cheap deltas.
        assert short_reads == [blob(feed, 2, "delta"), blob(feed, 3, "delta"), blob(feed, 4, "snapshot"),
                               blob(feed, 5, "delta")]
        assert long_reads == [blob(feed, v, "delta") for v in range(2, 6)]
        assert (short.view().base_version, short.view().deltas_applied) == (4, 1)
        assert (long.view().base_version, long.view().deltas_applied) == (1, 4)


def test_a_chain_bigger_than_its_snapshot_gives_way_to_a_snapshot(tmp_path: Path) -> None:
    def values(v: int) -> list[tuple[str, dict[str, str]]]:
        return [(f"k{i:03d}", {"blob": os.urandom(60).hex()}) for i in range(100) if v == 1 or i % 5 < 3]

    feed = Feed(tmp_path, snapshot_every=2, snapshot_ratio=100.0)  # snapshots at 1, 3
    for v in range(1, 4):
        feed.publish(values(v))
    delta_2, delta_3 = (feed.dataset.manifest(v).delta for v in (2, 3))
    snapshot_1, snapshot_3 = (feed.dataset.manifest(v).snapshot for v in (1, 3))
    assert delta_2 and delta_3 and snapshot_1 and snapshot_3
    # Each delta rewrites 60% of the records: cheaper to fetch than a snapshot, but two of them are not.
    assert delta_3.bytes < snapshot_3.bytes and delta_2.bytes + delta_3.bytes > snapshot_1.bytes
    with feed.consumer(pin=1) as consumer:
        reads = record_reads(consumer)
        consumer.set_pin(2)
        consumer.set_pin(3)
        assert reads == [delta_2.path, snapshot_3.path]
        assert view_state(consumer.view()) == feed.states[3]
