"""Commands for real nginx logs: `lookout ship`, `lookout nginx-config`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lookout.cli import main  # commands register on the main group

FORMAT_NAME = "lookout"
COUNTRY_VAR = "$lookout_country"


def nginx_config(
    server: str | None = None,
    access_log: str = "/var/log/nginx/access.log",
    geo: dict[str, str] | None = None,
    format_name: str = FORMAT_NAME,
) -> str:
    """The http-block snippet that makes nginx write the seed's record schema, one JSON object a line.

    Every value is a string, as in the seed's records; `$msec` (epoch seconds with
    milliseconds) is @timestamp, so event time needs no parsing and no time zone. `geo` adds
    real entries to the country table (the tests use it); the printed example has them commented."""
    server_value = server.replace('"', "") if server else "$hostname"
    if geo:
        entries = "".join(f"    {net:<18} {cc};\n" for net, cc in geo.items())
    else:
        entries = (
            "    # 203.0.113.0/24   NL;     # one line per network, e.g. generated from a GeoIP CSV\n    # 2001:db8::/32    DE;\n"
        )
    return f"""\
# lookout: nginx writes the seed's record schema, one JSON object per line.
# Put this in the http {{}} block (nginx >= 1.11.8 for escape=json), then `nginx -s reload`.

# Country of the client ("-" = unknown). Either a geo table (matches $remote_addr, i.e. the
# client address after set_real_ip_from/real_ip_header) ...
geo {COUNTRY_VAR} {{
    default            -;
{entries}}}
# ... or a map from a header your CDN sets (use it instead of the geo block above):
# map $http_cf_ipcountry {COUNTRY_VAR} {{ default $http_cf_ipcountry; "" -; }}
# ... or the GeoIP2 module (libnginx-mod-http-geoip2) with a MaxMind database:
# geoip2 /usr/share/GeoIP/GeoLite2-Country.mmdb {{ {COUNTRY_VAR} default=- country iso_code; }}
# Without any of them, drop the "country" line: `lookout run --tail … --geoip DB.mmdb` fills it in.

log_format {format_name} escape=json
  '{{'
    '"server":"{server_value}",'
    '"client_ip":"$remote_addr",'
    '"method":"$request_method",'
    '"status":"$status",'
    '"request_time":"$request_time",'
    '"host":"$host",'
    '"country":"{COUNTRY_VAR}",'
    '"@timestamp":"$msec"'
  '}}';

access_log {access_log} {format_name};
"""


@main.command("nginx-config")
@click.option("--server", default=None, help="Value of the `server` field (default: nginx's $hostname).")
@click.option("--access-log", default="/var/log/nginx/access.log", show_default=True, help="Path in the printed access_log line.")
def nginx_config_cmd(server: str | None, access_log: str) -> None:
    """Print a ready nginx log_format (and access_log line) producing the seed's records."""
    click.echo(nginx_config(server, access_log), nl=False)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--kafka", "bootstrap", envvar="LOOKOUT_KAFKA", required=True, help="Kafka bootstrap servers.")
@click.option("--topic", default="test-inter", show_default=True, help="Topic the records go to.")
@click.option(
    "--state-dir",
    default=".lookout-ship",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the read position is kept (tail-position.json).",
)
@click.option("--log-format", type=click.Choice(["auto", "json", "combined"]), default="auto", show_default=True)
@click.option(
    "--host", "log_host", default=None, help="Host for combined-format lines (they carry none). Default: this machine's name."
)
@click.option("--geoip", default=None, type=click.Path(dir_okay=False), help="MaxMind-format country database.")
@click.option(
    "--kafka-config",
    "kafka_config",
    multiple=True,
    metavar="KEY=VALUE",
    help="librdkafka property passed through (repeatable), e.g. security.protocol=SASL_SSL.",
)
@click.option("--partitions", default=3, show_default=True, help="Partitions if the topic has to be created.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--commit-interval",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds between waits for acknowledgement (and position saves).",
)
@click.option(
    "--rotate-wait",
    default="5m",
    show_default=True,
    help="Keep reading a rotated log (beside the new one) until it has been idle this long.",
)
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
    from lookout.cli_kafka import connection
    from lookout.rules import parse_duration
    from lookout.shipper import ShipOptions, run_ship

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
    from lookout.statelock import StateDirBusy

    try:
        sys.exit(run_ship(opts))
    except StateDirBusy as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
