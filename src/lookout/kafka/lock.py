"""The instance lock: at most one lookout instance reads a topic at a time.

A one-partition topic (`lookout-lock`) that every instance subscribes to in the group
`<group>.lock`. Kafka's group protocol gives that partition to exactly one member; whoever holds
it is active, the others stand by in `acquire()` and take over when the holder leaves (close)
or its session expires (6 s). The assignment strategy is cooperative-sticky, so an instance
joining the group does not move the lock off the active one. A lock topic that disappeared
(a broker restarted empty) is re-created by a waiting instance (`recreate_if_gone`): nobody could
ever be given a partition of a topic that does not exist.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from lookout.kafka.admin import ensure_topics, topic_partitions
from lookout.kafka.clients import consumer_config
from lookout.kafka.config import KafkaConnection

log = logging.getLogger("lookout.kafka")

LOCK_TOPIC = "lookout-lock"


class InstanceLock:
    """Membership of the lock group. `held` says whether this instance is the active one;
    `lost_at` is when it was last taken away (None while held or never lost)."""

    def __init__(self, conn: KafkaConnection, group: str, topic: str) -> None:
        self.conn = conn
        self.base_group = group
        self.group = f"{group}.lock"
        self.topic = topic  # the input topic it guards (for messages)
        self.held = False
        self.lost_at: float | None = None
        self.on_lost: Callable[[], None] = lambda: None
        self._consumer: Any = None

    def join(self) -> None:
        """Subscribe to the lock topic (it must exist); assignment happens in `poll`."""
        from confluent_kafka import Consumer

        if self._consumer is not None:
            return
        conf = consumer_config(
            self.conn,
            self.group,
            **{
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
                "auto.offset.reset": "latest",
                "partition.assignment.strategy": "cooperative-sticky",
            },
        )
        self._consumer = Consumer(conf)
        self._consumer.subscribe([LOCK_TOPIC], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked)

    def acquire(self, stop: Callable[[], bool] = lambda: False) -> bool:
        """Block until this instance holds the lock. False when asked to stop first."""
        self.join()
        if self.held:
            return True
        log.info("kafka: joining %s (group %s) to become the only reader of %s", LOCK_TOPIC, self.group, self.topic)
        t0 = time.monotonic()
        said = False
        while not self.held:
            if stop():
                return False
            self.poll(0.2)
            if not self.held and not said and time.monotonic() - t0 > 12:
                said = True
                log.warning(
                    "kafka: another lookout instance holds the input lock for %s (group %s); "
                    "standing by, will take over if it stops",
                    self.topic,
                    self.base_group,
                )
        if said:
            log.warning("kafka: took over the input lock for %s after %.1f s on standby", self.topic, time.monotonic() - t0)
        else:
            log.info("kafka: holding the input lock for %s", self.topic)
        return True

    def poll(self, timeout: float) -> None:
        """Serve the group protocol (heartbeats, rebalances); may change `held`."""
        if self._consumer is not None:
            self._consumer.poll(timeout)

    def recreate_if_gone(self) -> None:
        """While waiting for the lock: if the lock topic is gone (deleted, or the broker came back
        empty), re-create it and rejoin the group. Raises what the metadata request raises."""
        if self._consumer is None:
            return
        if topic_partitions(self._consumer, LOCK_TOPIC) is not None:
            self.conn.health.ok()
            return
        log.warning(
            "kafka: the lock topic %s is gone (deleted, or the broker came back empty); re-creating it and rejoining group %s",
            LOCK_TOPIC,
            self.group,
        )
        ensure_topics(self.conn, {LOCK_TOPIC: 1})
        self._consumer.unsubscribe()
        self._consumer.subscribe([LOCK_TOPIC], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked)

    def _assigned(self, consumer: Any, parts: list[Any]) -> None:
        if parts:
            self.held = True

    def _revoked(self, consumer: Any, parts: list[Any]) -> None:
        if self.held and parts:  # (cooperative rebalances may revoke nothing)
            self.held = False
            self.lost_at = time.monotonic()
            self.on_lost()

    def close(self) -> None:
        """Leave the lock group now, so a standby takes over at once."""
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception as e:  # noqa: BLE001 - closing anyway
                log.debug("kafka: lock close: %s", e)
            self._consumer = None
