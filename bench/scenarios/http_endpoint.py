"""The lookup HTTP endpoint (``combe serve``) against a flask app serving a dict, idle and while publishing.

The measuring is bench/http_serving.py's. Full mode uses its default setup (50,000
records: request throughput hardly depends on the dataset's size, and each
of the dict app's workers replays the whole changelog); quick mode a small one.
"""

from __future__ import annotations

from ..http_serving import Setup, measure
from ..stats import Figure
from ..workspace import Workspace

QUICK_SETUP = Setup(records=5_000, requests=500, seconds=5.0)


def run(ws: Workspace) -> list[Figure]:
    base = QUICK_SETUP if ws.mode.name == "quick" else Setup()
    setup = Setup(**{**vars(base), "runs": ws.mode.runs})
    return measure(setup, root=ws.root)
