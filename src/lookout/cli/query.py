"""Commands that read what a run stored: `lookout count`, `lookout search` (the embedded store or
Elasticsearch) and `lookout serve` (the web dashboard of a stopped or finished run)."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from lookout.cli.errors import usage_errors
from lookout.cli.options import (
    http_options,
    out_option,
    rules_option,
    ruleset,
    state_dir_option,
    store_option,
    stored_records_options,
)


def _store_dir(state_dir: str, store_dir: str | None) -> Path:
    """The store a query reads; a state dir or store that does not exist is an error (exit 2), not 0 records."""
    from lookout import store

    with usage_errors(store.StoreMissing):
        return store.query_dir(Path(state_dir), Path(store_dir) if store_dir else None)


@click.command()
@stored_records_options(store_help="Store directory (default: STATE_DIR/store).")
@click.option("--since", default=None, help="Only records at or after this time (ISO-8601 or epoch seconds; embedded store).")
@click.option("--until", default=None, help="Only records before this time (embedded store).")
def count(state_dir: str, store_dir: str | None, es_url: str | None, index: str, since: str | None, until: str | None) -> None:
    """Count the raw records stored (the embedded answer to `curl …/test-inter/_count`)."""
    from lookout import store

    if es_url:
        from lookout.sinks.elasticsearch import es_count

        n = es_count(es_url, index)
    else:
        with usage_errors(ValueError):
            q = store.Query.from_options(since=since, until=until)
        n = store.count(_store_dir(state_dir, store_dir), q.since_us, q.until_us)
    click.echo(orjson.dumps({"count": n}).decode())


@click.command()
@stored_records_options()
@click.option("--client-ip", default=None)
@click.option("--host", default=None)
@click.option("--country", default=None)
@click.option("--method", default=None)
@click.option("--status", default=None, help="A status, a range (400-499) or a class (4xx).")
@click.option("--path", default=None, help="Request paths starting with this prefix (e.g. /api/).")
@click.option("--since", default=None, help="ISO-8601 time or epoch seconds.")
@click.option("--until", default=None, help="ISO-8601 time or epoch seconds.")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(1, 100_000), help="At most this many records (1-100,000)."
)
def search(state_dir: str, store_dir: str | None, es_url: str | None, index: str, limit: int, **filters: str | None) -> None:
    """Find stored raw records (newest first), one JSON object per line."""
    from lookout import store
    from lookout.safe_text import json_line

    with usage_errors(ValueError):
        query = store.Query.from_options(**filters)
    if es_url:
        from lookout.sinks.elasticsearch import es_search

        rows = es_search(es_url, index, query, limit)
    else:
        rows = store.search(_store_dir(state_dir, store_dir), query, limit)
    for r in rows:
        click.echo(json_line(orjson.dumps(r).decode()))


@click.command()
@state_dir_option("The run's state directory (its embedded store is STATE_DIR/store).")
@out_option("The run's output directory (<rule>.jsonl, incidents.jsonl, rejected.jsonl).")
@store_option("Store directory (default: STATE_DIR/store; for `replay --store DIR`).")
@rules_option
@http_options(
    metavar="HOST:PORT",
    help="Address to serve on; a non-loopback address needs --http-token.",
    token_help="Bearer token the API requires (open the page as http://HOST:PORT/#token=TOKEN).",
)
def serve(state_dir: str, out_dir: str, store_dir: str | None, rules_path: str | None, http: str, http_token: str | None) -> None:
    """Serve the web dashboard of a stopped or finished run (or a `replay` backfill) from its files."""
    from lookout.dashboard import StoredRun
    from lookout.dashboard.server import ServeError
    from lookout.dashboard.server import serve as run_server

    rs = ruleset(rules_path, None)
    data = StoredRun(rs, Path(out_dir), Path(state_dir), Path(store_dir) if store_dir else None)
    with usage_errors(ServeError):
        run_server(data, http, http_token, announce=lambda m: click.echo(m, err=True))
