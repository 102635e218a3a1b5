"""Feeding a topic (`lookout produce`): a file's lines as they are, or generated seed-format
records, at a steady rate, every message acknowledged or counted.

Guarantee: `produce_lines` returns only once every message sent is acknowledged, refused (each
refusal counted, the first one's reason kept), or, after a stop request, given up on after
`stop_timeout` seconds (counted as not acknowledged: it may or may not have been written). A fatal
producer error ends it early with the same accounting. Nothing is dropped silently.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lookout.kafka.config import KafkaConnection

# librdkafka settings for a bulk feed: big batches, a deep local queue, no give-up timeout
# (a message is retried until acknowledged or the feed is stopped)
FEED_SETTINGS = {"linger.ms": 20, "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000, "message.timeout.ms": 0}


@dataclass
class ProduceOutcome:
    sent: int = 0  # handed to the producer
    failed: list[str] = field(default_factory=list)  # the broker's reasons, one per refused message
    left: int = 0  # not acknowledged when the feed ended (stopped, or a fatal error)
    fatal: str | None = None  # the fatal producer error that ended the feed early
    seconds: float = 0.0

    @property
    def acknowledged(self) -> int:
        return self.sent - len(self.failed) - self.left

    @property
    def ok(self) -> bool:
        return not self.failed and not self.left


def file_lines(path: str, count: int | None = None) -> Iterator[bytes]:
    """The file's non-empty lines as they are (without the newline, or a CR before it); `-` is stdin."""
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


def generated_lines(rate: float, count: int | None = None, seed: int | None = None) -> Iterator[bytes]:
    """Seed-format records with event time = now. Unthrottled (rate 0): 100 records per event-second
    ending now (`count` of them start count/100 s ago), never ahead of the wall clock: stamped
    from the start onward at 100/s, 50,000 records would reach 500 s into the future and a run
    would dead-letter them as `future-timestamp` (max_future is 5 minutes)."""
    from lookout.sources.generator import EVENT_RATE, Generator, GeneratorConfig

    start = time.time() - count / EVENT_RATE if rate <= 0 and count else None
    gen = Generator(GeneratorConfig(rate=rate if rate > 0 else EVENT_RATE, seed=seed), start=start)
    left = count
    while left is None or left > 0:
        n = 2000 if left is None else min(2000, left)
        until = time.time() if rate > 0 else min(gen.clock + n / EVENT_RATE, max(time.time(), gen.clock))
        df = gen.records(n, until=until)
        for line in df.write_ndjson().encode().splitlines():
            if left is not None:
                if left <= 0:
                    return
                left -= 1
            yield line


def produce_lines(
    conn: KafkaConnection,
    topic: str,
    lines: Iterator[bytes],
    rate: float = 0.0,
    partitions: int = 3,
    stop: Callable[[], bool] = lambda: False,
    stop_timeout: float = 10.0,
    say: Callable[[str], None] = lambda _: None,
) -> ProduceOutcome:
    """Produce every line to `topic` (created with `partitions` if missing), at `rate` per second
    when > 0, until the lines end or `stop()` says so; then wait for the acknowledgements (at most
    `stop_timeout` s once stopping). A stop while the broker is unreachable at the start ends the
    wait for it (nothing sent). `say` gets progress lines (every 5 s while sending, every 10 s
    while waiting)."""
    from confluent_kafka import KafkaError, KafkaException, Producer

    from lookout.kafka.admin import ensure_topics
    from lookout.kafka.clients import producer_config

    outcome = ProduceOutcome()
    t0 = time.monotonic()
    try:
        ensure_topics(conn, {topic: partitions}, stop=stop)
    except KafkaException:
        if not stop():
            raise
        outcome.seconds = max(time.monotonic() - t0, 1e-9)
        return outcome  # stopped while the broker was unreachable: nothing was sent

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            if err.code() not in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):  # purged: counted as left
                outcome.failed.append(err.str())
        else:
            conn.health.ok()

    producer = Producer(producer_config(conn, **FEED_SETTINGS))
    t0 = time.monotonic()  # the feed's rate is measured from here (not from the topic set-up)
    try:
        _send(producer, topic, lines, rate, stop, delivered, outcome, say)
        outcome.left = _await_acks(producer, stop, stop_timeout, say)
    except KafkaException as e:  # a fatal producer error (e.g. the broker came back without our producer id)
        outcome.left = len(producer)
        outcome.fatal = e.args[0].str() if e.args else str(e)
        try:
            producer.purge(in_queue=True, in_flight=True)
            producer.poll(0)
        except KafkaException:
            pass  # the same fatal error again: nothing more to learn
    outcome.seconds = max(time.monotonic() - t0, 1e-9)
    return outcome


def _send(
    producer: Any,
    topic: str,
    lines: Iterator[bytes],
    rate: float,
    stop: Callable[[], bool],
    delivered: Any,
    outcome: ProduceOutcome,
    say: Callable[[str], None],
) -> None:
    """Produce every line (at `rate`/s when > 0) until the lines end or a stop is requested,
    counting in outcome.sent (still right when a fatal KafkaException ends it)."""
    t0 = time.monotonic()
    last_report = t0
    for line in lines:
        if stop():
            break
        # not lookout.kafka.clients.produce: waiting for room in a full queue must end on a stop request
        while not stop():
            try:
                producer.produce(topic, value=line, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        else:
            break
        outcome.sent += 1
        sent = outcome.sent
        if sent % 10_000 == 0:
            producer.poll(0)
        if rate > 0:
            while (ahead := t0 + sent / rate - time.monotonic()) > 0 and not stop():
                producer.poll(min(ahead, 0.1))
        now = time.monotonic()
        if now - last_report >= 5:
            last_report = now
            say(f"produced {sent:,} messages ({sent / (now - t0):,.0f} msg/s)")


def _await_acks(producer: Any, stop: Callable[[], bool], stop_timeout: float, say: Callable[[str], None]) -> int:
    """Wait for the broker to acknowledge what was sent, saying so every 10 s; once a stop is
    requested wait at most `stop_timeout` more, then drop the rest. Returns the messages dropped."""
    deadline: float | None = None
    last_report = time.monotonic()
    while (left := len(producer)) > 0:
        now = time.monotonic()
        if stop() and deadline is None:
            deadline = now + stop_timeout
            say(f"stopping: waiting at most {stop_timeout:g} s for {left:,} unacknowledged messages")
        if deadline is not None and now >= deadline:
            producer.purge(in_queue=True, in_flight=True)  # their delivery reports say "purged"
            producer.poll(0)
            return left
        if now - last_report >= 10:
            last_report = now
            say(f"waiting for the broker to acknowledge {left:,} messages (signal to stop waiting)")
        producer.flush(0.5)  # short waits: the signal handler runs between them
    return 0
