"""`lookout generate`: seed-format records as NDJSON (test and benchmark input)."""

from __future__ import annotations

import sys

import click


@click.command()
@click.argument("count", type=int)
@click.option("--out", "out_path", default="-", show_default=True, help="File to write (default stdout).")
@click.option("--rate", default=100.0, show_default=True, help="Records per second of event time.")
@click.option("--start", default=1_659_509_400.0, show_default=True, help="Event time of the first record (epoch s).")
@click.option("--seed", default=7, show_default=True)
def generate(count: int, out_path: str, rate: float, start: float, seed: int) -> None:
    """Write COUNT seed-format records as NDJSON (test and benchmark input)."""
    from lookout.sources.generator import generate_file

    # stdout as the shell opened it: `>> file` appends (opening /dev/stdout anew would truncate)
    generate_file(sys.stdout.buffer if out_path == "-" else out_path, count, rate=rate, start=start, seed=seed)
