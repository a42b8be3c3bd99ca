"""``combe pin`` and ``combe unpin``: hold every consumer of a dataset at one version, or let them go."""

from __future__ import annotations

import argparse

from .options import add_dataset_options, add_json_option, emit_json, open_dataset, require_dataset


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers both subcommands: they are one operation, setting or clearing the store-wide pin."""
    pin = subparsers.add_parser(
        "pin", help="serve VERSION to every consumer that has no pin of its own (a rollback)",
        description="Set the store-wide pin: every consumer without a pin of its own moves to VERSION on its "
                    "next poll (going back by reverse deltas where that is cheaper) and stays there while "
                    "producers keep publishing. Clear it with combe unpin.")
    add_dataset_options(pin, signing=True)
    pin.add_argument("version", type=int, metavar="VERSION", help="the version to serve (1 to the announced one)")
    add_json_option(pin)
    pin.set_defaults(run=run)
    unpin = subparsers.add_parser(
        "unpin", help="clear the store-wide pin: consumers follow the announced version again",
        description="Clear the store-wide pin set by combe pin; consumers move to the announced version on "
                    "their next poll.")
    add_dataset_options(unpin, signing=True)
    add_json_option(unpin)
    unpin.set_defaults(run=run, version=None)


def run(args: argparse.Namespace) -> int:
    store, name = require_dataset(args)
    pointer, previous = open_dataset(args, store, name).set_pin(args.version)
    if args.json:
        emit_json({"dataset": name, "announced": pointer.version, "pin": pointer.pin, "previous_pin": previous,
                   "serving": pointer.serving})
    elif pointer.pin is None:
        print(f"{name}: no store-wide pin (was {previous}); consumers serve the announced version {pointer.version}")
    else:
        print(f"{name}: pinned to version {pointer.pin} (was {previous}; announced {pointer.version}); consumers "
              "without a pin of their own serve it from their next poll")
    return 0
