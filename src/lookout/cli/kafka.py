"""Commands for the Kafka integration: `lookout produce` (the seed's data producer: random
seed-format records, or a file's lines as they are) and `lookout consume` (the seed's
`test/kafka-consumer.py`). The work is in `lookout.kafka.produce` and `lookout.kafka.consume`."""

from __future__ import annotations

import sys

import click

from lookout.cli.errors import EXIT_FAILURE, fail
from lookout.cli.options import connection, kafka_config_option, kafka_option, partitions_option, topic_option

KAFKA_ENV_HELP = "Kafka bootstrap servers (env LOOKOUT_KAFKA)."


@click.command()
@kafka_option(help=KAFKA_ENV_HELP)
@topic_option(help=None)
@click.option(
    "--rate",
    type=float,
    default=None,
    help="Messages per second (default: 100 for generated records, as fast as possible for --input; 0 = no limit).",
)
@click.option("--count", type=int, default=None, help="Stop after this many messages (default: forever / the whole file).")
@click.option("--input", "input_path", default=None, help="Send this file's lines as they are (`-` for stdin).")
@click.option("--seed", type=int, default=None, help="Random seed for generated records.")
@partitions_option()
@click.option(
    "--stop-timeout",
    default=10.0,
    show_default=True,
    help="After SIGINT/SIGTERM, wait at most this many seconds for acknowledgements, then exit 1.",
)
@kafka_config_option
def produce(
    bootstrap: str,
    topic: str,
    rate: float | None,
    count: int | None,
    input_path: str | None,
    seed: int | None,
    partitions: int,
    stop_timeout: float,
    kafka_config: tuple[str, ...],
) -> None:
    """Feed a topic: random seed-format records (the seed's data producer) or a file's lines.

    Exit 0 once every message is acknowledged; on SIGINT/SIGTERM stop sending, wait at most
    --stop-timeout for the acknowledgements, then report the undelivered count and exit 1."""
    from lookout.kafka.produce import file_lines, generated_lines, produce_lines
    from lookout.loop import StopRequest
    from lookout.safe_text import plain

    conn = connection(bootstrap, kafka_config)
    if rate is None:
        rate = 0.0 if input_path else 100.0
    if rate < 0:
        fail("--rate must not be negative")
    stop = StopRequest()
    stop.install()
    lines = file_lines(input_path, count) if input_path else generated_lines(rate, count, seed)
    o = produce_lines(
        conn,
        topic,
        lines,
        rate=rate,
        partitions=partitions,
        stop=lambda: stop.requested,
        stop_timeout=stop_timeout,
        say=lambda m: click.echo(m, err=True),
    )
    if o.fatal is not None:
        click.echo(plain(f"error: kafka producer failed for good: {o.fatal}"), err=True)
    ok = o.acknowledged
    click.echo(
        f"produced {ok:,} messages to {topic} in {o.seconds:.2f} s ({ok / o.seconds:,.0f} msg/s)"
        + (f"; {len(o.failed):,} failed (first: {plain(o.failed[0])})" if o.failed else "")
        + (f"; {o.left:,} not acknowledged (may or may not have been written)" if o.left else ""),
        err=True,
    )
    if not o.ok:
        sys.exit(EXIT_FAILURE)


@click.command()
@click.argument("topic")
@kafka_option(help=KAFKA_ENV_HELP)
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message (default: only new ones).")
@click.option("--max-messages", type=int, default=None, help="Exit after this many messages.")
@click.option("--timeout", type=float, default=None, help="Exit after this many seconds without a message.")
@click.option("--pretty/--raw", default=None, help="Pretty output (default: when stdout is a terminal).")
@kafka_config_option
def consume(
    topic: str,
    bootstrap: str,
    from_beginning: bool,
    max_messages: int | None,
    timeout: float | None,
    pretty: bool | None,
    kafka_config: tuple[str, ...],
) -> None:
    """Print a topic's messages (the seed's test/kafka-consumer.py): pretty on a terminal, JSON lines when piped."""
    from lookout.kafka.consume import print_topic

    print_topic(
        connection(bootstrap, kafka_config),
        topic,
        from_beginning=from_beginning,
        max_messages=max_messages,
        timeout=timeout,
        pretty=sys.stdout.isatty() if pretty is None else pretty,
        warn=lambda m: click.echo(m, err=True),
    )
