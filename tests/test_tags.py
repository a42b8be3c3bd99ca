"""Version tags: given to publish (CLI and Python), stored in the manifest, checked on read, shown everywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from combe.cli import EXIT_USAGE, main
from combe.consumer import Consumer
from combe.consumer.server import create_app
from combe.format.dataset import Dataset
from combe.format.errors import ConfigError, FormatError
from combe.format.layout import manifest_path
from combe.format.manifest import MAX_TAG_VALUE, MAX_TAGS, Manifest, check_tags
from combe.producer import PublishOptions
from tests.support.changelog import append_jsonl
from tests.support.feed import Feed


def publish(tmp_path: Path, *flags: str) -> int:
    return main(["publish", "--source", str(tmp_path / "movies.jsonl"), "--store", str(tmp_path / "store"),
                 "--dataset", "movies", "--once", *flags])


def test_cli_tags_reach_the_manifest_inspect_the_consumer_and_http(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(tmp_path / "movies.jsonl", [("m1", {"title": "One"}), ("m2", {"title": "Two"})])
    assert publish(tmp_path, "--tag", "source.commit=4f2a9c1", "--tag", "job=nightly 42",
                   "--tag", "query=a=b") == 0
    append_jsonl(tmp_path / "movies.jsonl", [("m3", {"title": "Three"})])
    assert publish(tmp_path) == 0
    capsys.readouterr()
    dataset = Dataset.open(str(tmp_path / "store"), "movies")
    tags = {"job": "nightly 42", "query": "a=b", "source.commit": "4f2a9c1"}
    assert dataset.manifest(1).tags == tags
    assert dataset.manifest(2).tags == {}  # tags belong to the run that gave them, not to later versions
    written = json.loads((tmp_path / "store" / "movies" / manifest_path(1)).read_text())
    assert list(written["tags"]) == sorted(tags)  # stored sorted by key

    assert main(["inspect", "--store", str(tmp_path / "store"), "--dataset", "movies", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["versions"]
    assert [row["tags"] for row in rows] == [tags, {}]
    assert main(["inspect", "--store", str(tmp_path / "store"), "--dataset", "movies"]) == 0
    text = capsys.readouterr().out
    assert "tags: job=nightly 42 query=a=b source.commit=4f2a9c1" in text
    assert text.count("tags:") == 1

    with Consumer(str(tmp_path / "store"), "movies", pin=1) as consumer:
        assert consumer.status()["tags"] == tags
        with consumer.view() as view:
            assert view.tags == tags
            view.tags["job"] = "changed"  # a copy: the View's manifest stays as read
            assert view.tags == tags
        consumer.set_pin(None)
        assert consumer.status()["tags"] == {} and consumer.view().tags == {}

    app = create_app(str(tmp_path / "store"), ["movies"])
    try:
        client = app.test_client()
        assert client.get("/v1/datasets/movies").get_json()["tags"] == {}
        versions = client.get("/v1/datasets/movies/versions").get_json()["versions"]
        assert [(entry["version"], entry["tags"]) for entry in versions] == [(2, {}), (1, tags)]
    finally:
        app.extensions["combe"].close()


def test_python_publishing_takes_tags(tmp_path: Path) -> None:
    feed = Feed(tmp_path, tags={"data.date": "2026-11-27"})
    version = feed.publish([("k", {"n": 1})])
    assert feed.dataset.manifest(version).tags == {"data.date": "2026-11-27"}


@pytest.mark.parametrize("tags, message", [
    ({"": "x"}, "tag key ''"),
    ({"has space": "x"}, "tag key 'has space'"),
    ({"-lead": "x"}, "tag key '-lead'"),
    ({"k" * 129: "x"}, "tag key"),
    ({"k": "a\nb"}, "control character"),
    ({"k": "x" * (MAX_TAG_VALUE + 1)}, f"at most {MAX_TAG_VALUE}"),
    ({"k": 7}, "must be a string, not int"),
    ({f"k{i}": "x" for i in range(MAX_TAGS + 1)}, f"at most {MAX_TAGS}"),
])
def test_bad_tags_are_refused_naming_the_tag(tags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_tags(tags)
    with pytest.raises(ConfigError):
        PublishOptions(tags=tags)


def test_longest_allowed_tags_pass() -> None:
    tags = {f"k{i}": "é" * MAX_TAG_VALUE for i in range(MAX_TAGS)}
    tags["a" + "b" * 127] = tags.pop("k0")
    assert check_tags(tags) == dict(sorted(tags.items()))


@pytest.mark.parametrize("flags, message", [
    (["--tag", "no-equals"], "--tag 'no-equals': expected key=value"),
    (["--tag", "a=1", "--tag", "a=2"], "--tag a=...: given twice"),
    (["--tag", "bad key=1"], "tag key 'bad key'"),
])
def test_cli_refuses_bad_tags_before_publishing(tmp_path: Path, flags: list[str], message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    append_jsonl(tmp_path / "movies.jsonl", [("m1", {"title": "One"})])
    assert publish(tmp_path, *flags) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert Dataset.open(str(tmp_path / "store"), "movies").announced().pointer is None


def manifest_document(tmp_path: Path) -> dict[str, Any]:
    feed = Feed(tmp_path)
    feed.publish([("k", {"n": 1})])
    document: dict[str, Any] = json.loads(feed.dataset.manifest(1).to_json())
    return document


@pytest.mark.parametrize("tags, message", [
    ([["k", "v"]], "field 'tags' has the wrong type"),
    ({"k": 1}, "field 'tags': tag k: the value must be a string"),
    ({"k k": "v"}, "field 'tags': tag key 'k k'"),
])
def test_a_manifest_with_bad_tags_is_refused_on_read(tmp_path: Path, tags: Any, message: str) -> None:
    document = manifest_document(tmp_path)
    document["tags"] = tags
    with pytest.raises(FormatError, match=message):
        Manifest.from_json(json.dumps(document).encode(), "versions/000000000001.json")


def test_a_manifest_without_tags_reads_as_no_tags(tmp_path: Path) -> None:
    document = manifest_document(tmp_path)
    for absent in (lambda d: d.pop("tags"), lambda d: d.update(tags=None)):
        absent(document)
        assert Manifest.from_json(json.dumps(document).encode(), "m.json").tags == {}
