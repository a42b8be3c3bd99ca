"""The conformance corpus (docs/conformance/): combe still writes it, and FORMAT.md alone reads it.

"The bytes combe writes" are compared where they do not depend on the zstd
library's version: every blob's decompressed Arrow IPC file and its frame
layout (how many frames, and the IPC bytes in each), every JSON document
byte for byte except the compressed size and sha256 a manifest records of
each blob, and the changelogs and expected files. The committed blobs stay
valid whatever zstd produces today: their manifests record their own sizes
and digests, which the independent reader checks.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest

from combe.format.codec import _frame_table, decompress, encode_table, read_ipc, sha256_hex
from combe.format.layout import MANIFEST_FORMAT
from tests.support import corpus

CORPUS = corpus.DEFAULT_DIR
HAND_WRITTEN = {"README.md", "reader.py"}
REGENERATE = "make corpus (python -m tests.support.corpus) writes it again; commit it with the change"


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in HAND_WRITTEN and "__pycache__" not in p.parts}


def _blob_content(path: Path) -> tuple[list[int], bytes]:
    """A blob as what the format fixes: the IPC bytes of each frame (decompressed sizes) and the IPC file."""
    data = path.read_bytes()
    frames = _frame_table(data, str(path))
    ipc = bytes(decompress(data, path=str(path)))
    return ([size for _, _, _, size in frames] if frames else [len(ipc)]), ipc


def _without_blob_digests(path: Path) -> Any:
    document = json.loads(path.read_bytes())
    for ref in (document.get("blobs") or {}).values():
        if ref:
            del ref["bytes"], ref["sha256"]
    return document


def _differs(committed: Path, fresh: Path) -> bool:
    if committed.name.endswith(".arrow.zst"):
        return _blob_content(committed) != _blob_content(fresh)
    if committed.parent.name == "versions":
        return _without_blob_digests(committed) != _without_blob_digests(fresh)
    return committed.read_bytes() != fresh.read_bytes()


def test_the_corpus_is_what_combe_writes(tmp_path: Path) -> None:
    recorded = json.loads((CORPUS / "corpus.json").read_bytes())["manifest_format"]
    assert recorded == MANIFEST_FORMAT, (
        f"the corpus was written in format version {recorded}, combe writes {MANIFEST_FORMAT}: {REGENERATE}")
    corpus.write(tmp_path / "corpus")
    committed, fresh = _files(CORPUS), _files(tmp_path / "corpus")
    assert committed.keys() == fresh.keys(), (
        f"files only in the committed corpus: {sorted(committed.keys() - fresh.keys())}; only in a fresh one: "
        f"{sorted(fresh.keys() - committed.keys())}. {REGENERATE}")
    drifted = [name for name in committed if _differs(committed[name], fresh[name])]
    assert not drifted, (
        f"combe no longer writes these corpus files as committed, at the same format version {MANIFEST_FORMAT}: "
        f"{drifted}. A change readers must know about needs a new format version and FORMAT.md; any intended "
        f"change needs the corpus written again: {REGENERATE}")


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("conformance_reader", CORPUS / "reader.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reader_uses_nothing_of_combe() -> None:
    tree = ast.parse((CORPUS / "reader.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "hashlib", "json", "re", "struct", "sys", "zlib", "pathlib", "typing",
                        "pyarrow", "zstandard"}, imported


def test_an_independent_reader_following_format_md_reads_every_version() -> None:
    """reader.py, run with combe made unimportable, reads every version forward and backward as expected."""
    script = ("import runpy, sys; sys.modules['combe'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", script, str(CORPUS / "reader.py"), str(CORPUS)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    datasets = [entry["name"] for entry in json.loads((CORPUS / "corpus.json").read_bytes())["datasets"]]
    lines = done.stdout.splitlines()
    assert sorted(line.split()[1].rstrip(":") for line in lines) == sorted([*datasets, "vectors.json"])
    assert all(line.startswith("ok ") for line in lines), done.stdout


def test_the_corpus_covers_every_feature() -> None:
    """What issue 14 asks the corpus to hold, found in the committed files rather than assumed."""
    expected = {p.stem: json.loads(p.read_bytes()) for p in (CORPUS / "expected").glob("*.json")}
    types = {column["type"] for e in expected.values() for v in e["versions"] for column in v["schema"]}
    assert {"string", "int64", "float64", "bool", "binary", "json", "null"} <= types
    published = {e["dataset"] for e in expected.values()
                 if json.loads((CORPUS / "store" / e["dataset"] / "versions" / "000000000001.json").read_bytes())
                 .get("source", {}).get("uri", "").startswith("changelogs/")}
    grown = [c["type"] for e in expected.values() if e["dataset"] in published for v in e["versions"][1:]
             for c in v["schema"]]
    assert any(t.startswith("list<struct<") and ",tags:" in t for t in grown)  # the producer's, grown by a delta
    assert any(t.startswith("list<") for t in types) and any(t.startswith("struct<") for t in types) and \
        any(t.startswith("map<int64") for t in types) and any(t.startswith("map<string") for t in types)
    manifests = [json.loads(p.read_bytes()) for p in (CORPUS / "store").glob("*/versions/*.json")]
    assert {m["format_version"] for m in manifests} == {1, 2, 3}  # 3: a sharded dataset's versions
    assert any(m.get("schema_change") for m in manifests)
    sharded = [e for e in expected.values() if "shard_count" in e]
    assert sharded and any(len(set(v["shard_versions"])) > 1 for e in sharded for v in e["versions"])
    assert any(e["announced"]["pin"] is not None for e in expected.values())
    assert any(v["record_count"] == 0 and "index" in v for e in expected.values() for v in e["versions"])
    blobs = list((CORPUS / "store").glob("*/blobs/*.arrow.zst"))
    assert any(_frame_table(b.read_bytes(), b.name) for b in blobs if b.name.startswith("snapshot"))
    keys = {row["key"] for e in expected.values() if e["key_type"] == "string" for v in e["versions"]
            for row in v["rows"]}
    assert {"\ue000", "\U0001F600"} <= keys  # UTF-8 orders them one way, UTF-16 the other
    int_keys = {row[v["schema"][0]["name"]] for e in expected.values() if e["key_type"] == "int64"
                for v in e["versions"] for row in v["rows"]}
    assert {-(2**63), 2**63 - 1} <= int_keys


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(CORPUS, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _reverse_with_a_dropped_value(root: Path) -> None:
    """Version 3's reverse delta restores a row of version 2 with a value in the struct field ``z`` that version
    3 appended: blob and manifest made consistent, so only reading the state in version 2's schema can tell."""
    manifest_path = root / "versions" / "000000000003.json"
    manifest = json.loads(manifest_path.read_bytes())
    ref = manifest["blobs"]["reverse"]
    table = read_ipc(decompress((root / ref["path"]).read_bytes(), path=ref["path"]), path=ref["path"])
    rows = table.to_pylist()
    restored = next(row for row in rows if row["deep"])
    restored["deep"] = [{**item, "z": {"q": None}} if item else item for item in restored["deep"]]
    data = encode_table(pa.Table.from_pylist(rows, schema=table.schema))
    (root / ref["path"]).write_bytes(data)
    ref["bytes"], ref["sha256"] = len(data), sha256_hex(data)
    manifest_path.write_text(json.dumps(manifest))


def test_the_reader_notices_what_differs(copy: Path) -> None:
    """Each check can fail: one change per dataset, each found by the reader and named."""
    _edit(copy / "expected" / "scalars.json", '"rating": -0.0', '"rating": 0.0')  # a float's sign
    blob = next((copy / "store" / "nested" / "blobs").glob("delta-1-2-*"))
    data = bytearray(blob.read_bytes())
    data[-5] ^= 1
    blob.write_bytes(bytes(data))  # a flipped bit
    manifest = copy / "store" / "int-keys" / "versions" / "000000000002.json"
    document = json.loads(manifest.read_bytes())
    document["state_checksum"] = "h128:" + "0" * 32
    manifest.write_text(json.dumps(document))  # a checksum that the delta does not lead to
    _edit(copy / "expected" / "legacy.json", '"older_json_text": ["k2", "k3", "k4"]', '"older_json_text": ["k3", "k4"]')
    _edit(copy / "expected" / "pinned.json", '"serving": 2', '"serving": 3')
    index = copy / "expected" / "emptied.json"
    _edit(index, '"row": 0}', '"row": 1}')  # a lookup
    sharded = copy / "store" / "sharded" / "versions" / "000000000002.json"
    document = json.loads(sharded.read_bytes())
    document["shards"][2]["record_count"] += 1
    document["record_count"] += 1
    sharded.write_text(json.dumps(document))  # a shard entry that the shard version it names does not match
    _reverse_with_a_dropped_value(copy / "store" / "growth")
    vectors = json.loads((copy / "vectors.json").read_bytes())
    vectors["seeds"]["key"] = "0" * 16
    (copy / "vectors.json").write_text(json.dumps(vectors))
    results = _reader().check_corpus(copy)
    failed = {name: result for name, result in results.items() if isinstance(result, str)}
    assert failed.keys() == {"scalars", "nested", "int-keys", "legacy", "pinned", "emptied", "sharded", "growth",
                             "vectors.json"}, results
    assert "sha256" in failed["nested"] and "not canonical" in failed["legacy"] and "seed" in failed["vectors.json"]
    assert "struct field the schema lacks" in failed["growth"]
    assert "checksum" in failed["int-keys"] and "lookup" in failed["emptied"] and "-0.0" in failed["scalars"]
    assert "shard 2's version 1 is not what it names" in failed["sharded"]
