"""Commands for the Kafka integration: `lookout produce`, `lookout consume`.

`produce` is the seed's data producer (random seed-format records, or a file's lines as they
are); `consume` is the seed's `test/kafka-consumer.py` (every message of a topic, pretty on a
terminal, raw JSON lines when piped). Keys, values, headers and broker errors reach a terminal as
inert text (`lookout.safe_text`); piped output is the messages' bytes as they are.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from lookout.cli import EXIT_USAGE, main

if TYPE_CHECKING:
    from lookout.kafka.config import KafkaConnection

kafka_option = click.option(
    "--kafka", "bootstrap", envvar="LOOKOUT_KAFKA", required=True, help="Kafka bootstrap servers (env LOOKOUT_KAFKA)."
)
config_option = click.option(
    "--kafka-config",
    "kafka_config",
    multiple=True,
    metavar="KEY=VALUE",
    help="librdkafka property passed through (repeatable), e.g. security.protocol=SASL_SSL.",
)


def connection(bootstrap: str, kvs: tuple[str, ...]) -> KafkaConnection:
    """`--kafka` and `--kafka-config` as one connection; a malformed property is a usage error."""
    from lookout.kafka.config import KafkaConnection
    from lookout.kafka.errors import KafkaConfigError

    try:
        return KafkaConnection.from_options(bootstrap, kvs)
    except KafkaConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)


def _lines(path: str, count: int | None) -> Any:
    """The file's lines as they are (without the newline), `-` for stdin."""
    f = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    n = 0
    try:
        for raw in f:
            if count is not None and n >= count:
                return
            line = raw.rstrip(b"\n")
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                continue
            n += 1
            yield line
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _generated(rate: float, count: int | None, seed: int | None) -> Any:
    """Seed-format records with event time = now (or at 100 records per event-second when unthrottled)."""
    from lookout.sources.generator import Generator, GeneratorConfig

    gen = Generator(GeneratorConfig(rate=rate if rate > 0 else 100.0, seed=seed))
    left = count
    while left is None or left > 0:
        n = 2000 if left is None else min(2000, left)
        df = gen.records(n, until=time.time() if rate > 0 else None)
        for line in df.write_ndjson().encode().splitlines():
            if left is not None:
                if left <= 0:
                    return
                left -= 1
            yield line


@main.command()
@kafka_option
@click.option("--topic", default="test-inter", show_default=True)
@click.option(
    "--rate",
    type=float,
    default=None,
    help="Messages per second (default: 100 for generated records, as fast as possible for --input; 0 = no limit).",
)
@click.option("--count", type=int, default=None, help="Stop after this many messages (default: forever / the whole file).")
@click.option("--input", "input_path", default=None, help="Send this file's lines as they are (`-` for stdin).")
@click.option("--seed", type=int, default=None, help="Random seed for generated records.")
@click.option("--partitions", default=3, show_default=True, help="Partitions if the topic has to be created.")
@click.option(
    "--stop-timeout",
    default=10.0,
    show_default=True,
    help="After SIGINT/SIGTERM, wait at most this many seconds for acknowledgements, then exit 1.",
)
@config_option
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
    import signal

    from confluent_kafka import KafkaError, KafkaException, Producer

    from lookout.kafka.admin import ensure_topics
    from lookout.kafka.clients import producer_config
    from lookout.safe_text import plain

    conn = connection(bootstrap, kafka_config)
    if rate is None:
        rate = 0.0 if input_path else 100.0
    if rate < 0:
        click.echo("error: --rate must not be negative", err=True)
        sys.exit(EXIT_USAGE)
    ensure_topics(conn, {topic: partitions})
    failed: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            if err.code() not in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):  # purged: counted as left
                failed.append(err.str())
        else:
            conn.health.ok()

    producer = Producer(
        producer_config(
            conn,
            **{
                "linger.ms": 20,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 1_000_000,
                "message.timeout.ms": 0,
            },
        )
    )
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    source = _lines(input_path, count) if input_path else _generated(rate, count, seed)
    t0 = time.monotonic()
    progress = {"sent": 0}
    try:
        _send(producer, topic, source, rate, stop, delivered, progress)
        left = _await_acks(producer, stop, stop_timeout)
    except KafkaException as e:  # a fatal producer error (e.g. the broker came back without our producer id)
        left = len(producer)
        click.echo(plain(f"error: kafka producer failed for good: {e.args[0].str() if e.args else e}"), err=True)
        try:
            producer.purge(in_queue=True, in_flight=True)
            producer.poll(0)
        except KafkaException:
            pass  # the same fatal error again: nothing more to learn
    elapsed = max(time.monotonic() - t0, 1e-9)
    ok = progress["sent"] - len(failed) - left
    click.echo(
        f"produced {ok:,} messages to {topic} in {elapsed:.2f} s ({ok / elapsed:,.0f} msg/s)"
        + (f"; {len(failed):,} failed (first: {plain(failed[0])})" if failed else "")
        + (f"; {left:,} not acknowledged (may or may not have been written)" if left else ""),
        err=True,
    )
    if failed or left:
        sys.exit(1)


def _send(
    producer: Any, topic: str, source: Any, rate: float, stop: dict[str, bool], delivered: Any, progress: dict[str, int]
) -> None:
    """Produce every line (at `rate`/s when > 0) until the source ends or a stop is requested,
    counting in progress["sent"] (still right when a fatal KafkaException ends it)."""
    t0 = time.monotonic()
    last_report = t0
    for line in source:
        if stop["now"]:
            break
        # not lookout.kafka.clients.produce: waiting for room in a full queue must end on a stop request
        while not stop["now"]:
            try:
                producer.produce(topic, value=line, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        else:
            break
        progress["sent"] += 1
        sent = progress["sent"]
        if sent % 10_000 == 0:
            producer.poll(0)
        if rate > 0:
            while (ahead := t0 + sent / rate - time.monotonic()) > 0 and not stop["now"]:
                producer.poll(min(ahead, 0.1))
        now = time.monotonic()
        if now - last_report >= 5:
            last_report = now
            click.echo(f"produced {sent:,} messages ({sent / (now - t0):,.0f} msg/s)", err=True)


def _await_acks(producer: Any, stop: dict[str, bool], stop_timeout: float) -> int:
    """Wait for the broker to acknowledge what was sent, saying so every 10 s; once a stop is
    requested wait at most `stop_timeout` more, then drop the rest. Returns the messages dropped."""
    deadline: float | None = None
    last_report = time.monotonic()
    while (left := len(producer)) > 0:
        now = time.monotonic()
        if stop["now"] and deadline is None:
            deadline = now + stop_timeout
            click.echo(f"stopping: waiting at most {stop_timeout:g} s for {left:,} unacknowledged messages", err=True)
        if deadline is not None and now >= deadline:
            producer.purge(in_queue=True, in_flight=True)  # their delivery reports say "purged"
            producer.poll(0)
            return left
        if now - last_report >= 10:
            last_report = now
            click.echo(f"waiting for the broker to acknowledge {left:,} messages (signal to stop waiting)", err=True)
        producer.flush(0.5)  # short waits: the signal handler runs between them
    return 0


@main.command()
@click.argument("topic")
@kafka_option
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message (default: only new ones).")
@click.option("--max-messages", type=int, default=None, help="Exit after this many messages.")
@click.option("--timeout", type=float, default=None, help="Exit after this many seconds without a message.")
@click.option("--pretty/--raw", default=None, help="Pretty output (default: when stdout is a terminal).")
@config_option
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
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

    from lookout.kafka.admin import topic_partitions
    from lookout.kafka.clients import consumer_config
    from lookout.kafka.health import with_retry
    from lookout.safe_text import decode, plain

    conn = connection(bootstrap, kafka_config)
    show_pretty = sys.stdout.isatty() if pretty is None else pretty
    consumer = Consumer(consumer_config(conn, "lookout-consume"))
    parts = with_retry("reading topic metadata", lambda: topic_partitions(consumer, topic), conn.health)
    if parts is None:
        click.echo(plain(f"error: topic {topic} does not exist"), err=True)
        sys.exit(1)
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in parts])
    console = None
    if show_pretty:
        from rich.console import Console

        console = Console()
    n = 0
    last = time.monotonic()
    out = sys.stdout.buffer
    raw_on_tty = console is None and sys.stdout.isatty()  # --raw on a terminal: one escaped line per message
    try:
        while max_messages is None or n < max_messages:
            if timeout is not None and time.monotonic() - last >= timeout:
                break
            for m in consumer.consume(min(1000, (max_messages - n) if max_messages else 1000), 0.2):
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        click.echo(plain(f"kafka: {m.error().str()}"), err=True)
                    continue
                last = time.monotonic()
                n += 1
                value = m.value() or b""
                if console is None:
                    out.write((decode(value).encode() if raw_on_tty else value) + b"\n")
                else:
                    _pretty(console, m, value)
            if console is None:
                out.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        consumer.close()


def _pretty(console: Any, m: Any, value: bytes) -> None:
    """One message: a header line, then the value as indented JSON, or as text when it is not JSON.
    Every part is a rich Text (never markup) with control characters escaped."""
    import json

    from rich.highlighter import JSONHighlighter
    from rich.text import Text

    from lookout.safe_text import decode, json_line

    key = decode(m.key()) if m.key() else "-"
    rid = dict(m.headers() or []).get("lookout-id")
    console.print(
        Text.assemble(
            (f"{m.topic()}[{m.partition()}]@{m.offset()}", "dim"),
            " key=",
            (key, "bold"),
            (f" id={decode(rid)}", "dim") if rid else "",
        )
    )
    try:
        shown = json_line(json.dumps(json.loads(value.decode("utf-8")), indent=2, ensure_ascii=False))
    except (ValueError, RecursionError):  # not JSON (or not UTF-8): show it as text
        console.print(Text(decode(value)), soft_wrap=True)
        return
    console.print(JSONHighlighter()(Text(shown)), soft_wrap=True)
