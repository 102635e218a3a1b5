"""Printing a topic (`lookout consume`, the seed's test/kafka-consumer.py): every message, pretty
on a terminal, the values' bytes as they are when piped.

Guarantee: keys, values, headers and broker errors reach a terminal as inert text
(`lookout.safe_text`: control characters escaped, never rich markup); piped output is the
messages' bytes unchanged, one a line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from lookout.kafka.config import KafkaConnection
from lookout.kafka.errors import TopicNotFound


def print_topic(
    conn: KafkaConnection,
    topic: str,
    from_beginning: bool = False,
    max_messages: int | None = None,
    timeout: float | None = None,
    pretty: bool = False,
    out: BinaryIO | None = None,
    warn: Callable[[str], None] = lambda _: None,
) -> int:
    """Print `topic`'s messages until `max_messages`, `timeout` seconds without one, Ctrl-C or a
    closed pipe. `warn` gets broker errors as inert text. Returns the number printed; raises
    TopicNotFound when the topic does not exist."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

    from lookout.kafka.admin import topic_partitions
    from lookout.kafka.clients import consumer_config
    from lookout.kafka.health import with_retry
    from lookout.safe_text import decode, plain

    consumer = Consumer(consumer_config(conn, "lookout-consume"))
    parts = with_retry("reading topic metadata", lambda: topic_partitions(consumer, topic), conn.health)
    if parts is None:
        consumer.close()
        raise TopicNotFound(f"topic {topic} does not exist")
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in parts])
    console = None
    if pretty:
        from rich.console import Console

        console = Console()
    n = 0
    last = time.monotonic()
    out = out or sys.stdout.buffer
    raw_on_tty = console is None and sys.stdout.isatty()  # --raw on a terminal: one escaped line per message
    try:
        while max_messages is None or n < max_messages:
            if timeout is not None and time.monotonic() - last >= timeout:
                break
            for m in consumer.consume(min(1000, (max_messages - n) if max_messages else 1000), 0.2):
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        warn(plain(f"kafka: {m.error().str()}"))
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
    return n


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
