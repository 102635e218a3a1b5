"""Terminal output: the replay summary and the live view of `lookout run`."""

from __future__ import annotations

import sys

import orjson

from lookout.pipeline import Stats


def print_summary(stats: Stats, out_dir: str, as_json: bool = False) -> None:
    d = stats.as_dict()
    if as_json:
        sys.stdout.write(orjson.dumps(d).decode() + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title="lookout replay", show_header=False, box=None, title_justify="left")
    t.add_row("lines", f"{d['lines']:,}")
    t.add_row("valid records", f"{d['records']:,}")
    t.add_row("rejected", f"{d['rejected']:,}" + (f"  ({', '.join(f'{k}: {v:,}' for k, v in sorted(d['reasons'].items()) if k != 'late')})" if d["rejected"] else ""))
    t.add_row("late", f"{d['late']:,}")
    for name, n in d["results"].items():
        t.add_row(f"→ {name}", f"{n:,} results")
    t.add_row("time", f"{d['seconds']:.2f} s")
    if d["events_per_second"]:
        t.add_row("throughput", f"{d['events_per_second']:,} events/s")
    t.add_row("output", f"{out_dir}/")
    con.print(t)
