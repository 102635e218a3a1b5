"""`lookout check`: the options of `lookout run`, checked instead of run (`lookout.check`).

The command takes `run`'s parameters themselves (not a copy of their declarations), so any
line `lookout run …` stays valid as `lookout check …`: the deployment tests rely on that.
"""

from __future__ import annotations

import sys
import time

import click
import orjson

from lookout.cli.options import json_option
from lookout.cli.run import run


def _check(**opts: object) -> None:
    from lookout.check import check_run

    dry_run, timeout, as_json = bool(opts.pop("dry_run")), float(opts.pop("timeout")), bool(opts.pop("as_json"))  # type: ignore[arg-type]
    rules_path, lateness = opts.pop("rules_path"), opts.pop("lateness")
    opts.pop("view", None)
    t0 = time.monotonic()
    results = check_run(opts, rules_path, lateness, timeout, dry_run=dry_run)  # type: ignore[arg-type]
    failed = sum(not r.ok for r in results)
    elapsed = time.monotonic() - t0
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "ok": not failed,
                    "seconds": round(elapsed, 3),
                    "checks": [{"name": r.name, "ok": r.ok, "warn": r.warn, "detail": r.detail} for r in results],
                }
            ).decode()
        )
    else:
        for r in results:
            click.echo(f"{r.mark} {r.name:<24} {r.detail}")
        verdict = f"{failed} of {len(results)} checks failed" if failed else f"all {len(results)} checks passed"
        click.echo(f"{verdict} ({elapsed:.1f} s){' - dry run: nothing contacted' if dry_run else ''}")
    sys.exit(1 if failed else 0)


check = click.Command(
    "check",
    callback=_check,
    params=[
        *run.params,
        click.Option(["--dry-run"], is_flag=True, help="Only parse the options and validate the rules: no network, no files."),
        click.Option(
            ["--timeout"],
            type=float,
            default=5.0,
            show_default=True,
            help="Seconds each service may take to answer (the whole check is bounded by twice this, plus 1).",
        ),
    ],
    help="Check what `lookout run` with these options needs: rules, state and output dirs, the log to tail, Kafka "
    "(reachable, API versions, topics, permissions, the input lock) and Elasticsearch (version, templates, "
    "credentials). One line per check, exit 0 when all pass, 1 otherwise; secrets are never printed.",
    short_help="Check a run's configuration: rules, dirs, Kafka, Elasticsearch.",
)
# --json as the other commands declare it (a decorator), help worded for results
json_option("Print the results as JSON.")(check)
