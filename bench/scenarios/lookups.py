"""Lookups on the loaded dataset, beside the same lookups on a dict of dicts.

The timing functions are bench/lookups.py's: ``get`` timed call by call with
perf_counter (the timer pair adds about 0.1 us to every sample, on both
sides) and ``get_many`` over batches of keys. Here they run on the
benchmark's dataset, for string and for int64 keys. The dict hands back the
dict it stores, while combe builds a new dict from the columns on every call:
that is the price of keeping the data in Arrow columns.
"""

from __future__ import annotations

from ..data import replay_jsonl
from ..lookups import get_p50_us, keys_per_s
from ..stats import Figure, ratio
from ..workspace import KEY_TYPES, Workspace, sample_keys

BATCH = 1000  # keys per get_many call


def run(ws: Workspace) -> list[Figure]:
    figures: list[Figure] = []
    for key_type in KEY_TYPES:
        suffix = "" if key_type == "string" else "_int_keys"
        keys = sample_keys(ws, key_type, ws.mode.lookups)
        state = replay_jsonl(ws.changelogs[key_type])
        get_p50 = Figure(f"get_p50_us{suffix}", "us", [], f"combe get, {key_type} keys", ("<=", 2.0))
        dict_p50 = Figure(f"dict_get_p50_us{suffix}", "us", [], f"dict.get, {key_type} keys")
        many = Figure(f"get_many_keys_per_s{suffix}", "keys/s", [],
                      f"combe get_many, {BATCH} {key_type} keys per call", (">=", 2e6))
        dict_many = Figure(f"dict_get_many_keys_per_s{suffix}", "keys/s", [],
                           f"[d.get(k) for k in keys], {BATCH} {key_type} keys per call")
        with ws.consumer(key_type) as consumer:
            for _ in range(ws.mode.runs):
                get_p50.values.append(get_p50_us(consumer.get, keys))
                dict_p50.values.append(get_p50_us(state.get, keys))
                many.values.append(keys_per_s(consumer.get_many, keys, BATCH))
                # called at once, before the del below: the lambda never sees a later state
                dict_many.values.append(keys_per_s(lambda ks: [state.get(k) for k in ks], keys, BATCH))  # noqa: B023, F821
        del state
        figures += [get_p50, dict_p50, ratio(f"get_p50_multiple_of_dict{suffix}", get_p50, dict_p50),
                    many, dict_many]
    return figures
