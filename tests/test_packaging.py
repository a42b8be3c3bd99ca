"""The wheel: one distribution whose three architecture folders land inside the combe namespace."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Source folder -> where it lives in the combe namespace (DESIGN.md, "Layout").
ROOTS = {"combe": "combe", "format": "combe/format", "producer": "combe/producer", "consumer": "combe/consumer"}
# Every package in the tree, found rather than listed, so a new subpackage cannot be left out of the wheel.
PACKAGES = {
    f"{package}/{init.parent.relative_to(REPO / folder).as_posix()}".rstrip("/.") or package:
        init.parent.relative_to(REPO).as_posix()
    for folder, package in ROOTS.items() for init in sorted((REPO / folder).rglob("__init__.py"))
}


def test_wheel_holds_every_subpackage_and_the_command(tmp_path: Path) -> None:
    # Build from a copy: an in-tree build writes build/ and egg-info beside files others are editing.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "tests", "build", "dist", "*.egg-info", "__pycache__", ".*cache", "bench", "examples"))
    # --no-isolation: the build backend comes from the test extra, so no index is needed at test time.
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                           "--outdir", str(tmp_path / "dist"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("combe-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()

    for package, folder in PACKAGES.items():
        modules = {p.name for p in (REPO / folder).glob("*.py")}
        assert "__init__.py" in modules, folder
        packed = {n.rsplit("/", 1)[1] for n in names if n.rsplit("/", 1)[0] == package and n.endswith(".py")}
        assert modules <= packed, f"{package}: missing {sorted(modules - packed)}"
    assert "combe/__main__.py" in names
    assert {"combe/consumer/server/openapi.json", "combe/consumer/server/static/index.html"} <= set(names)
    assert not any(n.startswith(("format/", "producer/", "consumer/", "tests/")) for n in names), \
        "the architecture folders are installed only inside the combe namespace"
    assert "[console_scripts]" in scripts and "combe = combe.cli:main" in scripts
    for requirement in ("pyarrow", "fsspec", "zstandard", "numpy"):
        assert f"Requires-Dist: {requirement}" in metadata, requirement
    for extra in ("kafka", "s3", "server", "bench", "test"):
        assert f"Provides-Extra: {extra}" in metadata, extra
    deltalake = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: deltalake")]
    assert deltalake and all('extra == "bench"' in line for line in deltalake), "deltalake is for the benchmarks only"
