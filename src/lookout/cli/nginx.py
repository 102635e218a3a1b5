"""Commands for real nginx logs: `lookout nginx-config` (the log_format that writes lookout's
input; built by `lookout.nginx_config`) and `lookout ship` (tail a log into Kafka; `lookout.shipper`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lookout.cli.errors import usage_errors
from lookout.cli.options import (
    connection,
    duration_option,
    kafka_config_option,
    kafka_option,
    log_format_options,
    partitions_option,
    rotate_wait_option,
    state_dir_option,
    topic_option,
)


@click.command("nginx-config")
@click.option("--server", default=None, help="Value of the `server` field (default: nginx's $hostname).")
@click.option("--access-log", default="/var/log/nginx/access.log", show_default=True, help="Path in the printed access_log line.")
def nginx_config(server: str | None, access_log: str) -> None:
    """Print a ready nginx log_format (and access_log line) producing the seed's records."""
    from lookout.nginx_config import nginx_config as snippet

    click.echo(snippet(server, access_log), nl=False)


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@kafka_option()
@topic_option("Topic the records go to.")
@state_dir_option("Where the read position is kept (tail-position.json).", default=".lookout-ship")
@log_format_options
@kafka_config_option
@partitions_option()
@duration_option()
@click.option(
    "--commit-interval",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds between waits for acknowledgement (and position saves).",
)
@rotate_wait_option("Keep reading a rotated log (beside the new one) until it has been idle this long.")
def ship(
    path: str,
    bootstrap: str,
    topic: str,
    state_dir: str,
    log_format: str,
    log_host: str | None,
    geoip: str | None,
    kafka_config: tuple[str, ...],
    partitions: int,
    duration: float | None,
    commit_interval: float,
    rotate_wait: str,
) -> None:
    """Tail an nginx access log and produce seed-format records to Kafka (at-least-once)."""
    from lookout.rules import parse_duration
    from lookout.shipper import ShipOptions, run_ship
    from lookout.statelock import StateDirBusy

    opts = ShipOptions(
        path=Path(path),
        kafka=connection(bootstrap, kafka_config),
        topic=topic,
        state_dir=Path(state_dir),
        log_format=log_format,
        host=log_host,
        geoip=Path(geoip) if geoip else None,
        partitions=partitions,
        duration=duration,
        commit_interval=commit_interval,
        rotate_wait=parse_duration(rotate_wait) / 1e6,
    )
    with usage_errors(StateDirBusy):
        sys.exit(run_ship(opts))
