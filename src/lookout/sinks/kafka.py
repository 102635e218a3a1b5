"""Results and dead letters to Kafka: each rule's results to the topic named after the rule (the
seed's `goal1-topic` … `goal4-topic`), rejected and late records to `<input topic>-dlq`.

Why: the run loop commits input offsets only after `flush()` returns, so `flush()` blocks until
the broker has acknowledged every message (idempotent producer, acks=all, no delivery timeout:
librdkafka retries for as long as it takes, and a broker outage only makes flush wait). A message
the broker refuses for good (too large, not authorised, fatal producer error) stops the run
*without committing*: a restart re-derives it from the checkpoint, so nothing is dropped.
Keys are the group-by value (Java-compatible murmur2 partitioning, so a key always lands on the
same partition), values are the result JSON, and header `lookout-id` carries the stable result
id, so a consumer can drop the exact copies a crash-restart may repeat.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from lookout.kafka.admin import ensure_topics
from lookout.kafka.clients import produce, producer_config
from lookout.kafka.config import KafkaConnection
from lookout.kafka.errors import KafkaDeliveryError
from lookout.sinks.base import Sink

if TYPE_CHECKING:
    from lookout.incidents import Transition
    from lookout.output import ResultBatch
    from lookout.rules import RuleSet

log = logging.getLogger("lookout.kafka")


__all__ = ["KafkaDeliveryError", "KafkaSink"]


class KafkaSink(Sink):
    name = "kafka"

    def __init__(self, conn: KafkaConnection, dlq_topic: str, rules: RuleSet, partitions: int = 3) -> None:
        from confluent_kafka import Producer

        self.conn = conn
        self.health = conn.health
        self.dlq_topic = dlq_topic
        topics = {r.name: partitions for r in rules.rules}
        topics[dlq_topic] = partitions
        from lookout.incidents import INCIDENTS_NAME

        self.incidents_topic = INCIDENTS_NAME
        topics[INCIDENTS_NAME] = partitions
        ensure_topics(conn, topics)
        self.producer = Producer(
            producer_config(
                conn,
                **{
                    "message.timeout.ms": 0,  # 0: retry forever
                    "partitioner": "murmur2_random",
                    "linger.ms": 10,
                    "compression.type": "none",
                    "queue.buffering.max.messages": 1_000_000,
                },
            )
        )
        self.failed: list[str] = []
        self.sent = 0
        self.aborted = False

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is None:
            self.health.ok()
            return
        self.failed.append(f"{msg.topic()}: {err.str()}")

    def _produce(
        self, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        produce(
            self.producer,
            topic,
            value,
            key,
            headers,
            self._delivered,  # waits while the queue is full
            abandoned=lambda: self.aborted,
        )
        self.sent += 1

    def write_results(self, batch: ResultBatch) -> None:
        topic = batch.rule.name
        for value, key, rid in zip(batch.lines, batch.keys, batch.ids, strict=True):
            self._produce(topic, value, key.encode(), [("lookout-id", rid.encode())])
        self.producer.poll(0)

    def write_incidents(self, transitions: list[Transition]) -> None:
        # key = incident id: every transition of an incident lands on one partition, in order
        for t in transitions:
            self._produce(self.incidents_topic, t.line, t.id.encode(), [("lookout-id", t.idempotency_key.encode())])
        self.producer.poll(0)

    def write_rejected(self, entries: list[bytes]) -> None:
        for e in entries:
            self._produce(self.dlq_topic, e)
        self.producer.poll(0)

    def flush(self) -> None:
        """Return only when the broker has acknowledged everything produced so far."""
        t0 = time.monotonic()
        said = 0.0  # when we last said we are waiting (seconds into the wait)
        most = 0
        while True:
            left = self.producer.flush(0.5)
            self._raise_failed()
            if left and self.aborted:
                raise KafkaDeliveryError(f"kafka: flush abandoned with {left} messages unacknowledged")
            if left == 0:
                if said:
                    log.warning("kafka: all %d outstanding messages acknowledged after %.1f s", most, time.monotonic() - t0)
                return
            most = max(most, left)
            waited = time.monotonic() - t0
            if waited >= 5 and (not said or waited - said >= 30):
                log.warning(
                    "kafka: waiting for the broker to acknowledge %d messages (%.0f s)%s; input is not committed until it does",
                    left,
                    waited,
                    f": broker unreachable ({self.health.last_reason})" if self.health.down else "",
                )
                said = waited

    def _raise_failed(self) -> None:
        if self.failed:
            first = self.failed[0]
            raise KafkaDeliveryError(
                f"kafka: {len(self.failed)} message(s) refused by the broker (first: {first}); "
                "stopping without committing, a restart re-sends them"
            )

    def error_count(self) -> int:
        return len(self.failed)

    def abort(self) -> None:
        """A bounded stop: stop waiting for the broker (nothing unacknowledged is committed)."""
        self.aborted = True

    def close(self) -> None:
        if not self.aborted:
            self.flush()
