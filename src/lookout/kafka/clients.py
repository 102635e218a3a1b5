"""Producer and consumer settings, built in one place, and the one way lookout produces.

Every producer is idempotent with acks=all: a message counts as sent only once every in-sync
replica has it, and librdkafka's retries cannot write it twice. Callers add their tuning
(linger, batching, delivery timeout); the user's `--kafka-config` properties win over both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lookout.kafka.config import KafkaConnection

RELIABLE_PRODUCER = {"enable.idempotence": True, "acks": "all"}


def producer_config(conn: KafkaConnection, quiet: bool = True, **tuning: Any) -> dict[str, Any]:
    """Idempotent, acks=all producer settings plus the caller's tuning."""
    return conn.client_config(quiet, **{**RELIABLE_PRODUCER, **tuning})


def consumer_config(conn: KafkaConnection, group: str, quiet: bool = True, **tuning: Any) -> dict[str, Any]:
    """Consumer settings: `group` as group.id (the user's group.id, if any, still wins), offsets
    never auto-committed (lookout commits what is durable, or nothing)."""
    return conn.client_config(quiet, **{"group.id": group, "enable.auto.commit": False, **tuning})


def produce(
    producer: Any,
    topic: str,
    value: bytes,
    key: bytes | str | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    on_delivery: Callable[[Any, Any], None] | None = None,
    wait: float = 0.1,
) -> None:
    """Produce one message, waiting for acknowledgements while the local queue is full: never drops."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(wait)
