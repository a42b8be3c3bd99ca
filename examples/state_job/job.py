"""A nightly job that computes a whole catalogue and publishes it as the next version of a dataset.

    python examples/state_job/job.py --input examples/state_job/prices.csv --store ./store --dataset prices

The job is its own source: it reads its input (a CSV here; a database query
in real life), derives the state it means to publish (prices with tax, the
discontinued items left out), and hands the whole of it to
``combe.publish_state``. Keys missing from the state are removed; a run that
changes nothing publishes nothing; a state that would remove more than half
the records (an empty or truncated input) is refused, and consumers keep the
version they have.
"""

from __future__ import annotations

import argparse
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

import combe

TAX = 0.2


def catalogue(path: str) -> pa.Table:
    """The state to publish: one row per SKU still sold, with its price including tax."""
    rows = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types={"sku": pa.string()}))
    sold = rows.filter(pc.invert(rows.column("discontinued"))).drop_columns(["discontinued"])
    with_tax = pc.round(pc.multiply(sold.column("price"), 1 + TAX), 2)
    return sold.append_column("price_with_tax", with_tax)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="the CSV of prices")
    parser.add_argument("--store", required=True, help="a path, memory:// or s3://bucket/prefix")
    parser.add_argument("--dataset", default="prices")
    args = parser.parse_args(argv)
    try:
        result = combe.publish_state(args.store, args.dataset, catalogue(args.input), key="sku")
    except combe.ValidationError as refused:  # a truncated input: nothing was announced
        print(f"refused: {refused}", file=sys.stderr)
        return 1
    if result.outcome == "noop":
        print(f"{args.dataset}: unchanged, version {result.version} stays")
    else:
        print(f"{args.dataset}: published version {result.version} "
              f"(+{result.added} ~{result.updated} -{result.removed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
