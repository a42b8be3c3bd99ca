"""Lookups on the loaded dataset, beside the same lookups on a dict of dicts.

``get`` latency is timed call by call with perf_counter (the timer pair adds
about 0.1 us to every sample, on both sides); ``get_many`` is timed over the
whole key list. The dict hands back the dict it stores, while combe builds a
new dict from the columns on every call: that difference is the price of
keeping the data in Arrow columns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ..data import replay_jsonl
from ..stats import Figure, percentile, ratio, timed
from ..workspace import KEY_TYPES, Workspace, sample_keys


def get_p50_us(get: Callable[[Any], Any], keys: Sequence[Any]) -> float:
    clock = time.perf_counter
    samples = []
    for key in keys:
        start = clock()
        get(key)
        samples.append(clock() - start)
    return percentile(samples, 0.5) * 1e6


def keys_per_s(get_many: Callable[[Sequence[Any]], object], keys: Sequence[Any]) -> float:
    seconds, _ = timed(lambda: get_many(keys))
    return len(keys) / seconds


def run(ws: Workspace) -> list[Figure]:
    figures: list[Figure] = []
    for key_type in KEY_TYPES:
        suffix = "" if key_type == "string" else "_int_keys"
        keys = sample_keys(ws, key_type, ws.mode.lookups)
        state = replay_jsonl(ws.changelogs[key_type])
        get_p50 = Figure(f"get_p50_us{suffix}", "us", [], f"combe get, {key_type} keys", ("<=", 2.0))
        dict_p50 = Figure(f"dict_get_p50_us{suffix}", "us", [], f"dict.get, {key_type} keys")
        many = Figure(f"get_many_keys_per_s{suffix}", "keys/s", [], f"combe get_many, {key_type} keys",
                      (">=", 2e6))
        dict_many = Figure(f"dict_get_many_keys_per_s{suffix}", "keys/s", [],
                           f"[d.get(k) for k in keys], {key_type} keys")
        with ws.consumer(key_type) as consumer:
            for _ in range(ws.mode.runs):
                get_p50.values.append(get_p50_us(consumer.get, keys))
                dict_p50.values.append(get_p50_us(state.get, keys))
                many.values.append(keys_per_s(consumer.get_many, keys))
                dict_many.values.append(keys_per_s(lambda ks: [state.get(k) for k in ks], keys))
        del state
        figures += [get_p50, dict_p50, ratio(f"get_p50_multiple_of_dict{suffix}", get_p50, dict_p50),
                    many, dict_many]
    return figures
