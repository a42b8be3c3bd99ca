"""The ``combe`` command: help, publish / inspect / get end to end, exit codes and messages."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from combe.cli import COMMANDS, main
from tests.support.changelog import append_jsonl
from tests.support.served import NESTED_V1, NESTED_V2, publish_nested

CHANGES = [("alien", {"title": "Alien", "year": 1979}), ("heat", {"title": "Heat", "year": 1995}),
           ("up", {"title": "Up", "year": 2009, "tags": ["pixar"]}), ("heat", {"title": "Heat", "year": 1995.5}),
           ("gone", {"title": "Gone"}), ("gone", None)]


def combe(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m combe ARGS`` in a fresh process, without COMBE_* defaults."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COMBE_")}
    return subprocess.run([sys.executable, "-m", "combe", *args], capture_output=True, text=True, timeout=120,
                          env=clean)


@pytest.fixture
def changelog(tmp_path: Path) -> Path:
    path = tmp_path / "movies.jsonl"
    append_jsonl(path, CHANGES)
    return path


@pytest.fixture(autouse=True)
def no_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMBE_STORE", raising=False)
    monkeypatch.delenv("COMBE_DATASET", raising=False)


# -- help ------------------------------------------------------------------------------------


def test_top_level_help() -> None:
    done = combe("--help")
    assert done.returncode == 0, done.stderr
    for word in ("publish", "inspect", "get", "--store", "--dataset", "exit codes", "COMBE_STORE"):
        assert word in done.stdout, word


def test_console_script_entry_point() -> None:
    (script,) = entry_points(group="console_scripts", name="combe")
    assert script.value == "combe.cli:main"
    assert script.load() is main


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: combe {command}" in out and "--store" in out and "--dataset" in out


@pytest.mark.parametrize("command, options", [
    ("publish", ["--source", "--key-field", "--key-type", "--value-format", "--key-delimiter", "--on-bad-record",
                 "--once", "--interval", "--snapshot-every", "--json", "kafka://", "file://"]),
    ("inspect", ["--json", "--last"]),
    ("get", ["KEY", "--at"]),
])
def test_subcommand_help_mentions_its_options(command: str, options: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for option in options:
        assert option in out, option


# -- publish, inspect, get ---------------------------------------------------------------------


def test_publish_inspect_get_in_subprocesses(tmp_path: Path, changelog: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    dataset = ["--store", store, "--dataset", "movies"]
    done = combe("publish", "--source", str(changelog), *dataset, "--once")
    assert done.returncode == 0, done.stderr
    assert "published version 1" in done.stdout and "+3" in done.stdout

    done = combe("inspect", *dataset, "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["announced"] == 1 and document["dataset"] == "movies" and document["pin"] is None
    (version,) = document["versions"]
    assert version["version"] == 1 and version["records"] == 3 and version["announced"] is True
    assert version["changes"]["messages"] == len(CHANGES) and version["changes"]["added"] == 3
    assert version["blobs"]["snapshot"]["bytes"] > 0 and version["blobs"]["snapshot"]["rows"] == 3
    assert version["blobs"]["delta"] is None
    assert version["source"]["positions"] == {str(changelog): {"0": changelog.stat().st_size}}

    done = combe("get", *dataset, "up", "gone", "alien")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines == [{"key": "up", "title": "Up", "year": 2009.0, "tags": ["pixar"]}, None,
                     {"key": "alien", "title": "Alien", "year": 1979.0, "tags": None}]
    assert "'gone' is not in movies version 1" in done.stderr

    # inspect's text form in this process: the --json run above proved the command as a process.
    assert main(["inspect", *dataset]) == 0
    out = capsys.readouterr().out
    assert "announced version 1" in out and str(changelog) in out


def test_environment_defaults_and_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COMBE_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("COMBE_DATASET", "movies")
    lines = "".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in CHANGES).encode()
    for expected in ("published version 1", "nothing to publish"):  # stdin is read whole each time
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines)))
        assert main(["publish", "--source", "-", "--once"]) == 0
        assert expected in capsys.readouterr().out
    assert main(["get", "heat"]) == 0
    assert json.loads(capsys.readouterr().out) == {"key": "heat", "title": "Heat", "year": 1995.5, "tags": None}


def test_publish_inspect_get_in_process(tmp_path: Path, changelog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    dataset = ["--store", store, "--dataset", "movies"]
    assert main(["publish", "--source", str(changelog), *dataset, "--once", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["outcome"], result["version"], result["added"]) == ("published", 1, 3)

    append_jsonl(changelog, [("alien", None), ("jaws", {"title": "Jaws", "year": 1975})])
    assert main(["publish", "--source", str(changelog), *dataset, "--once"]) == 0
    assert "published version 2" in capsys.readouterr().out

    assert main(["inspect", *dataset, "--json", "--last", "1"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["announced"] == 2 and [v["version"] for v in document["versions"]] == [2]
    changes = document["versions"][0]["changes"]
    assert (changes["added"], changes["removed"], changes["messages"]) == (1, 1, 2)
    assert document["versions"][0]["blobs"]["delta"]["rows"] == 2

    assert main(["get", *dataset, "alien", "jaws"]) == 0
    out = capsys.readouterr()
    assert [json.loads(line) for line in out.out.splitlines()] == [
        None, {"key": "jaws", "title": "Jaws", "year": 1975.0, "tags": None}]
    assert main(["get", *dataset, "--at", "1", "alien"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Alien"


def test_int64_keys_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "numbers.txt"
    path.write_text('1,{"name": "one"}\n-20,{"name": "minus twenty"}\n')
    dataset = ["--store", str(tmp_path / "store"), "--dataset", "numbers"]
    assert main(["publish", "--source", str(path), *dataset, "--once", "--key-delimiter", ",",
                 "--key-type", "int64", "--key-field", "id"]) == 0
    capsys.readouterr()
    assert main(["get", *dataset, "-20", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"id": -20, "name": "minus twenty"}, {"id": 1, "name": "one"}]
    assert main(["get", *dataset, "x"]) == 1
    assert "key 'x' is not a 64-bit integer" in capsys.readouterr().err


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["inspect", "--dataset", "movies"], "no store given"),
    (["get", "--dataset", "movies", "k"], "no store given"),
    (["publish", "--source", "x.jsonl", "--dataset", "movies", "--once"], "no store given"),
    (["inspect", "--store", "STORE"], "no dataset given"),
    (["inspect", "--store", "STORE", "--dataset", "../x"], "invalid dataset name '../x'"),
    (["get", "--store", "STORE", "--dataset", "a/b", "k"], "invalid dataset name 'a/b'"),
    (["publish", "--source", "CHANGES", "--store", "STORE", "--dataset", "../x", "--once"], "invalid dataset name"),
    (["publish", "--source", "nats://x/y", "--store", "STORE", "--dataset", "movies", "--once"], "unknown scheme"),
])
def test_usage_errors_exit_2(tmp_path: Path, changelog: Path, argv: list[str], message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path / "store") if a == "STORE" else str(changelog) if a == "CHANGES" else a for a in argv]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.startswith(f"combe {argv[0]}: "), error


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["publish", "--store", "s", "--dataset", "d"],
                                  ["publish", "--source", "x", "--key-type", "uuid"], ["get", "--store", "s"]])
def test_argument_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage: combe" in capsys.readouterr().err


def test_usage_error_in_a_subprocess(tmp_path: Path) -> None:
    done = combe("inspect", "--store", str(tmp_path), "--dataset", "../x")
    assert done.returncode == 2
    assert "invalid dataset name '../x'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["inspect"], ["get", "k"]])
def test_a_missing_dataset_exits_1(tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = [command[0], "--store", str(tmp_path / "store"), "--dataset", "nothing", *command[1:]]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert "'nothing' has no announced version" in error, error


def test_a_missing_dataset_in_a_subprocess(tmp_path: Path) -> None:
    done = combe("get", "--store", str(tmp_path / "store"), "--dataset", "nothing", "k")
    assert done.returncode == 1
    assert "has no announced version" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_source_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert main(["publish", "--source", str(missing), "--store", str(tmp_path / "s"), "--dataset", "d", "--once"]) == 1
    assert f"{missing} does not exist" in capsys.readouterr().err


def test_get_a_version_that_was_never_announced_exits_2(tmp_path: Path, changelog: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    dataset = ["--store", str(tmp_path / "store"), "--dataset", "movies"]
    assert main(["publish", "--source", str(changelog), *dataset, "--once"]) == 0
    capsys.readouterr()
    assert main(["get", *dataset, "--at", "7", "up"]) == 2
    assert "versions run from 1 to the announced version 1" in capsys.readouterr().err


def test_a_corrupted_manifest_exits_1_naming_it(tmp_path: Path, changelog: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    dataset = ["--store", str(tmp_path / "store"), "--dataset", "movies"]
    assert main(["publish", "--source", str(changelog), *dataset, "--once"]) == 0
    manifest = tmp_path / "store" / "movies" / "versions" / "000000000001.json"
    manifest.write_text(manifest.read_text().replace('"format_version": 2', '"format_version": 9'))
    capsys.readouterr()
    for command in (["inspect"], ["get", "up"]):
        assert main([command[0], *dataset, *command[1:]]) == 1
        error = capsys.readouterr().err
        assert f"{manifest} has format_version 9" in error and "Upgrade combe" in error, error


# -- one declaration of each setting; the library speaks its parameter names, the command its flags ------------


def test_publish_flags_default_to_what_the_library_declares() -> None:
    from combe.cli import build_parser
    from combe.cli.options import settings_args
    from combe.producer import PublishOptions, RecordFormat

    args = build_parser().parse_args(["publish", "--source", "x"])
    library = PublishOptions()
    assert settings_args(args, RecordFormat) == vars(RecordFormat()) == {
        "key_field": "key", "key_type": "string", "value_format": "json"}
    assert settings_args(args, PublishOptions) == {
        "on_bad_record": library.on_bad_record, "snapshot_every": library.snapshot_every,
        "snapshot_ratio": library.snapshot_ratio}


@pytest.mark.parametrize("argv, library, command", [
    (["--snapshot-every", "0"], "snapshot_every=0", "--snapshot-every 0"),
    (["--snapshot-ratio", "-1"], "snapshot_ratio=-1.0", "--snapshot-ratio -1.0"),
    (["--max-removed", "-1"], "max_removed=-1.0", "--max-removed -1.0"),
])
def test_library_errors_name_parameters_and_the_command_names_flags(
        tmp_path: Path, changelog: Path, argv: list[str], library: str, command: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    from combe.cli import build_parser
    from combe.cli.options import settings_args
    from combe.cli.validation import validation_options
    from combe.format.errors import ConfigError
    from combe.producer import PublishOptions

    full = ["publish", "--source", str(changelog), "--store", str(tmp_path / "store"), "--dataset", "movies",
            "--once", *argv]
    with pytest.raises(ConfigError) as caught:
        args = build_parser().parse_args(full)
        PublishOptions(**settings_args(args, PublishOptions), **validation_options(args))
    assert library in str(caught.value) and "--" not in str(caught.value)
    assert main(full) == 2
    assert command in capsys.readouterr().err


def test_flags_replace_parameter_names_only_where_they_cannot_be_words() -> None:
    from combe.cli import build_parser, in_flags

    publish = next(a for a in build_parser()._actions if a.dest == "command").choices["publish"]  # type: ignore[attr-defined]
    said = ("version 3 of dataset 'movies' at /data/key_field/store was published with key_type=int64; raise "
            "max_removed, or max_removed=None, or allow_empty_keys, or rebuild=now; the source's timeout")
    assert in_flags(said, publish) == (
        "version 3 of dataset 'movies' at /data/key_field/store was published with --key-type int64; raise "
        "--max-removed, or --no-max-removed, or --allow-empty-keys, or --rebuild now; the source's timeout")


def test_library_string_literals_name_no_command_flags() -> None:
    """Messages, logs and metric help in format/, producer/ and consumer/ (docstrings aside) use parameter names."""
    import ast

    repo = Path(__file__).resolve().parent.parent
    found = []
    for folder in ("format", "producer", "consumer"):
        for path in sorted((repo / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                          if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                          and node.body and isinstance(node.body[0], ast.Expr)
                          and isinstance(node.body[0].value, ast.Constant)}
            for node in ast.walk(tree):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                        and re.search(r"(?<![\w-])--[a-z]", node.value)):
                    found.append(f"{path.relative_to(repo)}:{node.lineno}: {node.value[:60]!r}")
    assert found == []


def test_inspect_and_get_show_nested_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    publish_nested(store)
    dataset = ["--store", store, "--dataset", "nested"]
    assert main(["get", *dataset, "a", "c"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[1] == {"key": "c", "tags": None, "who": None, "ids": {}, "raw": None, "doc": None}
    assert lines[0]["who"] == {"id": 1, "name": "Ann", "age": None} and lines[0]["ids"] == {"7": [1.5, None], "-2": []}
    assert lines[0]["raw"] == ["\x00\ufffd"]  # binary as text, as for binary columns

    assert main(["inspect", *dataset]) == 0
    out = capsys.readouterr().out
    assert "  who   struct<id:int64,name:string,age:int64>\n" in out and "  ids   map<int64,list<float64>>\n" in out
    assert main(["inspect", *dataset, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schema"] == NESTED_V2.to_json()
    assert main(["pin", *dataset, "1"]) == 0
    capsys.readouterr()
    assert main(["inspect", *dataset, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schema"] == NESTED_V1.to_json()  # the version served


@pytest.mark.parametrize("argv, command", [(["publish", "--source", "x"], "publish"), (["-v", "-v", "unpin"], "unpin"),
                                           (["--help"], None), ([], None)])
def test_the_command_is_the_first_word_that_is_not_a_flag(argv: list[str], command: str | None) -> None:
    from combe.cli import command_in

    assert command_in(argv) == command


def test_a_run_imports_its_own_commands_library_alone() -> None:
    """``combe publish`` does not import the consumer or the HTTP server only to build parsers it will not use;
    a subcommand registered by another's module (history by diff's) is still found."""
    code = ("import json, sys\nfrom combe.cli import build_parser\n"
            "args = build_parser('publish').parse_args(['publish', '--source', 'x'])\n"
            "assert args.command == 'publish'\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('combe.'))))\n"
            "assert build_parser('history').parse_args(['history', 'k']).command == 'history'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported = json.loads(done.stdout)
    assert "combe.cli.publish" in imported and not [m for m in imported if m.startswith("combe.consumer")], imported
