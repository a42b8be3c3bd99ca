"""The file source's edges: unterminated last lines and lone surrogates."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from combe.format.dataset import Dataset
from combe.producer import Publisher, open_source
from combe.producer.sources.base import Lines
from combe.producer.sources.file import _read_ahead
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


def _numbered_blocks(count: int, read: list[int], closed: list[bool], fail_at: int | None = None
                     ) -> Generator[Lines, None, None]:
    try:
        for index in range(count):
            if index == fail_at:
                raise OSError(f"block {index} cannot be read")
            read.append(index)
            yield Lines("file", bytearray(b"{}\n"), index + 1, 3 * (index + 1))
    finally:
        closed.append(True)


def test_blocks_are_read_one_ahead_and_the_reading_is_closed_when_the_caller_stops() -> None:
    read: list[int] = []
    closed: list[bool] = []
    blocks = _read_ahead(_numbered_blocks(5, read, closed))
    assert next(blocks).first_line == 1
    blocks.close()  # the caller stops (a bad record): the block being read is waited for, then no more
    assert read == [0, 1] and closed == [True]
    assert [b.first_line for b in _read_ahead(_numbered_blocks(3, [], []))] == [1, 2, 3]


def test_a_block_that_cannot_be_read_raises_in_the_reader() -> None:
    read: list[int] = []
    closed: list[bool] = []
    blocks = _read_ahead(_numbered_blocks(5, read, closed, fail_at=2))
    assert [next(blocks).first_line, next(blocks).first_line] == [1, 2]
    with pytest.raises(OSError, match="block 2 cannot be read"):
        next(blocks)
    assert read == [0, 1] and closed == [True]
