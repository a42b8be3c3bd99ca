"""The quick start: publish the bundled movie catalogue, then read it as a service would.

Publishes examples/movies/changelog.jsonl (updates and tombstones included) into
a local store with the same code path as ``combe publish --once``, then opens a
Consumer and looks records up. Run it again: the second publish finds nothing
new and announces nothing. It ends by saying where the store is and which
commands to try on it next.

    python examples/quickstart.py [STORE]
"""

from __future__ import annotations

import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from combe import Consumer
from combe.cli import main as combe

HERE = Path(__file__).parent
CHANGELOG = HERE / "movies" / "changelog.jsonl"


def run(store: str) -> None:
    print(f"$ combe publish --source {CHANGELOG.relative_to(HERE.parent)} --store {store} --dataset movies --once")
    code = combe(["publish", "--source", str(CHANGELOG), "--store", store, "--dataset", "movies", "--once"])
    if code != 0:
        sys.exit(code)

    started = time.perf_counter()
    with Consumer(store, "movies") as movies:
        loaded_ms = (time.perf_counter() - started) * 1000
        print(f"\nConsumer loaded movies version {movies.version}: {len(movies)} records in {loaded_ms:.1f} ms")
        for key in ("tt0034583", "tt0075148", "tt0013442"):
            record = movies.get(key)
            shown = record if record is None else {k: record[k] for k in ("title", "year", "rating")}
            print(f"  get({key!r}) -> {shown}")
        with movies.view() as view:
            table = view.table
            best = table.sort_by([("rating", "descending")]).slice(0, 3).select(["title", "rating"]).to_pylist()
            print(f"  top rated in version {view.version}: {best}")
        root = movies.dataset.root.url

    print(f"\nThe store is {root}; dataset movies is in {movies.dataset.url}. Next, try:")
    for command in next_commands(root):
        print(f"  {command}")
    print("(combe serve needs the server extra, pip install 'combe[server]'; it answers on http://127.0.0.1:8080/)")


def next_commands(store: str) -> list[str]:
    """What to run next on the quick start's store, as shell lines."""
    combe, dataset = combe_command(), f"--store {shlex.quote(store)} --dataset movies"
    return [f"{combe} inspect {dataset}", f"{combe} get {dataset} tt0034583 tt0075148",
            f"{combe} serve {dataset} --dev"]


def combe_command() -> str:
    """How to run the combe this script uses: ``combe`` when that is the one on PATH, else its script beside this
    interpreter (``.venv/bin/combe`` after ``make quickstart``, whose venv is not on PATH)."""
    beside = Path(sys.executable).parent / "combe"
    found = shutil.which("combe")
    if not beside.exists() or (found is not None and Path(found).resolve() == beside.resolve()):
        return "combe"
    try:
        return shlex.quote(str(beside.relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(beside))


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else str(Path(tempfile.gettempdir()) / "combe-quickstart"))
