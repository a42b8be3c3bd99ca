"""Cold start: how long until a read service has the dataset in memory.

combe: ``Consumer(store, dataset)`` on the announced version (read the
announcement and manifest, read the snapshot blob, check its sha256,
decompress, map the Arrow IPC file and its key index). Against:

- replaying the compacted topic from the real broker into a dict of dicts,
  what read services do today;
- reading the same state from a Parquet file with pyarrow (no key index);
- the floor: zstd decompression plus an Arrow IPC read of the very snapshot
  bytes combe loads, already in memory. combe cannot beat this; the figure
  says how much it adds on top.

Also timed: ``Consumer(..., cache_dir=...)`` over a cache directory an earlier
consumer on the host filled (a restart): it maps the decompressed, verified
file and hashes it whole (XXH3-64, consumer/cache.py) instead of reading,
checking and decompressing the blob. ``cache_restart_speedup`` is the cold
load over that restart, run by run; the goal is 20x.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from ..kafka_topic import replay_into_dict
from ..stats import Figure, ratio, timed
from ..workspace import Workspace


def floor_load(blob: bytes) -> pa.Table:
    """The least any reader of a zstd-compressed Arrow IPC snapshot must do: one decoder reading the
    whole zstd stream on one core (a large blob is several frames), then the Arrow IPC read."""
    ipc = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True).read()
    return pa.ipc.open_file(pa.BufferReader(ipc)).read_all()


def run(ws: Workspace) -> list[Figure]:
    dataset = ws.dataset()
    manifest = dataset.manifest(dataset.require_announced().version)
    assert manifest.snapshot is not None, "the bench publishes a snapshot at every version"
    blob = dataset.read_blob(manifest.snapshot)
    records = manifest.record_count
    replay = Figure("replay_dict_s", "s", [], "confluent-kafka replay of the compacted topic into a dict of dicts")
    load = Figure("combe_load_s", "s", [], "Consumer() on the announced version, from the local store")
    parquet = Figure("parquet_read_s", "s", [], "pyarrow.parquet.read_table of the same state")
    floor = Figure("floor_load_s", "s", [], "zstd decompress + Arrow IPC read of the snapshot bytes in memory")
    cached = Figure("combe_load_cache_dir_s", "s", [], "Consumer(cache_dir=...) over a cache dir filled before")
    cache_dir = ws.root / "blob-cache"
    ws.consumer(cache_dir=cache_dir).close()
    for _ in range(ws.mode.runs):
        seconds, state = timed(lambda: replay_into_dict(ws.bootstrap, ws.topic, "string"))
        if len(state) != records:
            raise AssertionError(f"the replay holds {len(state)} keys, the dataset {records}")
        replay.values.append(seconds)
        del state
        seconds, consumer = timed(ws.consumer)
        load.values.append(seconds)
        if len(consumer) != records:
            raise AssertionError(f"the consumer holds {len(consumer)} records, the manifest {records}")
        consumer.close()
        del consumer
        seconds, consumer = timed(lambda: ws.consumer(cache_dir=cache_dir))
        cached.values.append(seconds)
        consumer.close()
        del consumer
        seconds, table = timed(lambda: pq.read_table(ws.parquet))
        parquet.values.append(seconds)
        seconds, table = timed(lambda: floor_load(blob))
        floor.values.append(seconds)
        del table
    return [
        replay, load, parquet, floor, cached,
        ratio("cold_start_speedup_vs_replay", replay, load, goal=(">=", 50)),
        ratio("cold_start_speedup_vs_replay_cache_dir", replay, cached),
        ratio("cache_restart_speedup", load, cached, goal=(">=", 20)),
        ratio("cold_start_speedup_vs_parquet", parquet, load),
        ratio("load_time_multiple_of_floor", load, floor, goal=("<=", 2.0)),
    ]
