"""The file source's edges: unterminated last lines and lone surrogates."""

from __future__ import annotations

from pathlib import Path

import pytest

from combe.format.dataset import Dataset
from combe.producer import Publisher, open_source
from combe.format.jsontext import _stdlib_loads_record


def test_a_last_line_without_newline_waits_for_the_next_run(tmp_path: Path) -> None:
    changelog = tmp_path / "changes.jsonl"
    changelog.write_text('{"key": "a", "value": {"x": 1}}\n{"key": "b", "value": {"x"')
    dataset = Dataset.open(str(tmp_path / "store"), "d")
    with open_source(str(changelog)) as source:
        first = Publisher(dataset, source).run_cycle()
    assert (first.version, first.messages) == (1, 1)
    with changelog.open("a") as handle:
        handle.write(': 2}}\n')
    with open_source(str(changelog)) as source:
        second = Publisher(dataset, source).run_cycle()
    assert (second.version, second.messages, second.added, second.bad_records) == (2, 1, 1, 0)


@pytest.mark.parametrize("text", [b'{"a": "\\ud800"}', b'{"k\\uDC00": 1}'])
def test_the_stdlib_path_refuses_lone_surrogates_like_orjson(text: bytes) -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        _stdlib_loads_record(text)


def test_the_stdlib_path_keeps_surrogate_pairs() -> None:
    assert _stdlib_loads_record(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001F600"}
