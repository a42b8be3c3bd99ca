"""Type-check combe as users import it: ``python tools/typecheck.py [mypy options]`` (run by ``make check``).

The folders format/, producer/ and consumer/ are installed as combe.format, combe.producer and
combe.consumer (``[tool.setuptools.package-dir]`` in pyproject.toml). mypy knows a package only by the
folder it sits in, so on the checkout it would see a top-level ``format`` and find no ``combe.format``:
every ``combe.*`` import would be unresolved and, with missing imports ignored, typed ``Any``. Neither
mypy's options nor the editable install (an import hook, which mypy does not run) can express the mapping,
so this script builds the package as installed: a tree of symlinks in build/typecheck/ made from that same
table, so it cannot drift from what pip installs. mypy (configured in pyproject.toml) checks the tree; its
findings are printed with the paths of the real files.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TREE = REPO / "build" / "typecheck"


def package_dirs() -> dict[str, Path]:
    """Package name -> the source folder it is installed from, as setuptools reads it."""
    with (REPO / "pyproject.toml").open("rb") as handle:
        table = tomllib.load(handle)["tool"]["setuptools"]["package-dir"]
    return {name: REPO / folder for name, folder in table.items()}


def build_tree() -> dict[Path, Path]:
    """Link every mapped package into TREE; return linked path -> real path, longest first.

    A package that contains mapped subpackages (``combe``) becomes a real folder holding links to its
    own entries; any other package is one link to its folder.
    """
    shutil.rmtree(TREE, ignore_errors=True)
    links: dict[Path, Path] = {}
    mapping = package_dirs()
    for name, folder in sorted(mapping.items()):
        target = TREE.joinpath(*name.split("."))
        target.parent.mkdir(parents=True, exist_ok=True)
        if any(other.startswith(name + ".") for other in mapping):
            target.mkdir()
            for entry in sorted(folder.iterdir()):
                if entry.name != "__pycache__":
                    (target / entry.name).symlink_to(entry)
                    links[target / entry.name] = entry
        else:
            target.symlink_to(folder, target_is_directory=True)
            links[target] = folder
    return dict(sorted(links.items(), key=lambda item: -len(str(item[0]))))


def real_paths(text: str, links: dict[Path, Path]) -> str:
    """Rewrite the tree's paths in mypy's report to the files they link to, relative to the repository."""
    for link, real in links.items():
        text = text.replace(os.path.relpath(link, REPO), os.path.relpath(real, REPO))
    return text


def main(argv: list[str]) -> int:
    from mypy import api  # imported here: building the tree needs no mypy

    links = build_tree()
    os.chdir(REPO)
    out, err, status = api.run(argv)
    sys.stdout.write(real_paths(out, links))
    sys.stderr.write(real_paths(err, links))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
