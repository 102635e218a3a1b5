"""`lookout serve`: the web dashboard of a stopped or finished run (registered on the main group)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lookout.cli import EXIT_USAGE, _load, main, rules_option


@main.command()
@click.option(
    "--state-dir",
    default=".lookout-state",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The run's state directory (its embedded store is STATE_DIR/store).",
)
@click.option(
    "--out",
    "out_dir",
    default="lookout-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The run's output directory (<rule>.jsonl, incidents.jsonl, rejected.jsonl).",
)
@click.option(
    "--store",
    "store_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Store directory (default: STATE_DIR/store; for `replay --store DIR`).",
)
@rules_option
@click.option(
    "--http",
    "http",
    envvar="LOOKOUT_HTTP",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to serve on; a non-loopback address needs --http-token.",
)
@click.option(
    "--http-token",
    "http_token",
    envvar="LOOKOUT_HTTP_TOKEN",
    default=None,
    help="Bearer token the API requires (open the page as http://HOST:PORT/#token=TOKEN).",
)
def serve(state_dir: str, out_dir: str, store_dir: str | None, rules_path: str | None, http: str, http_token: str | None) -> None:
    """Serve the web dashboard of a stopped or finished run (or a `replay` backfill) from its files."""
    from lookout.dashboard import StoredRun
    from lookout.dashboard.server import ServeError
    from lookout.dashboard.server import serve as run_server

    rs = _load(rules_path, None)
    data = StoredRun(rs, Path(out_dir), Path(state_dir), Path(store_dir) if store_dir else None)
    try:
        run_server(data, http, http_token, announce=lambda m: click.echo(m, err=True))
    except ServeError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
