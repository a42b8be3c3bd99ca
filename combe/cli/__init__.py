"""The ``combe`` command: a thin shell over the library, one module per subcommand.

Exit codes (also in README.md):

0  success, including a publish with nothing to do
1  failure (the message says what and where)
2  usage error
3  a publish refused by a validator (nothing announced)
4  a publish that lost the race to another producer (nothing announced by this run)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Sequence

from combe.format.errors import CombeError, ConfigError, ConflictError, ValidationError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_REFUSED, EXIT_CONFLICT = 0, 1, 2, 3, 4

# Error class -> exit code and message prefix; the first match wins, so the most specific come first.
ERROR_EXITS: tuple[tuple[type[CombeError], int, str], ...] = (
    (ValidationError, EXIT_REFUSED, "refused: "),
    (ConflictError, EXIT_CONFLICT, ""),
    (ConfigError, EXIT_USAGE, ""),
    (CombeError, EXIT_FAILURE, ""),
)

# Subcommands, in the order --help lists them; each module has add_parser() and run().
# "pin" registers both pin and unpin, "diff" both diff and history.
COMMANDS = ("publish", "serve", "inspect", "get", "diff", "pin", "gc")

EPILOG = """\
Every subcommand names its dataset with --store URL --dataset NAME (defaults:
$COMBE_STORE, $COMBE_DATASET). A store is a path, file://, memory:// or
s3://bucket/prefix.

exit codes: 0 success (a publish with nothing to do included), 1 failure,
2 usage error, 3 publish refused by a validator, 4 publish lost the race to
another producer (nothing announced by this run)."""


# Subcommands registered by another's module.
MODULE_OF = {"unpin": "pin", "history": "diff"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or only of ``command``'s module when it names one: a run then imports
    the library of the command it runs alone (the consumer and the HTTP server take a tenth of a second of a
    ``combe publish`` to import)."""
    parser = argparse.ArgumentParser(
        prog="combe",
        description="Publish a compacted Kafka topic (or a changelog file) as versioned snapshots and "
                    "deltas, and read them at dict speed.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    module = MODULE_OF.get(command or "", command)
    for name in [module] if module in COMMANDS else COMMANDS:
        importlib.import_module(f"combe.cli.{name}").add_parser(subparsers)
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not a flag (``combe`` itself has only -v)."""
    return next((word for word in argv if not word.startswith("-")), None)


def in_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """A library message in the words of the command: the library names its parameters (``snapshot_every=0``,
    ``max_removed``), the command names its flags (``--snapshot-every 0``, ``--max-removed``).

    A name is translated where the subcommand has the flag, and only where it cannot be an ordinary word
    (followed by ``=``, or holding an underscore) nor part of a path; ``name=None`` becomes ``--no-name``
    where that flag exists.
    """
    names = {option[2:].replace("-", "_"): option for action in parser._actions
             for option in action.option_strings if option.startswith("--")}
    if not names:
        return message
    pattern = re.compile(r"(?<![\w/.-])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True)))
                         + r")(?![\w/-])(=None\b|=)?")

    def flag(found: re.Match[str]) -> str:
        name, equals = found.group(1), found.group(2)
        if equals == "=None" and f"no_{name}" in names:
            return names[f"no_{name}"]  # max_removed=None: --no-max-removed
        return f"{names[name]} " if equals == "=" else names[name] if "_" in name else found.group(0)

    return pattern.sub(flag, message)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[command]
            return found
    raise LookupError(command)


def report_error(exc: CombeError, args: argparse.Namespace, then: str = "") -> int:
    """Say on stderr what failed, in the command's words (and ``then``, what happens next); the exit code."""
    code, prefix = next((code, prefix) for kind, code, prefix in ERROR_EXITS if isinstance(exc, kind))
    print(f"combe {args.command}: {prefix}{in_flags(str(exc), args.command_parser)}{then}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``combe`` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(command_in(argv))
    args = parser.parse_args(argv)
    args.command_parser = _subparser(parser, args.command)
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        code: int = args.run(args)
        return code
    except CombeError as exc:
        return report_error(exc, args)
    except KeyboardInterrupt:
        print(f"combe {args.command}: interrupted", file=sys.stderr)
        return 130
