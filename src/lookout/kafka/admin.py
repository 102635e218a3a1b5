"""Topics: create the missing ones, describe the existing ones.

Guarantee: `ensure_topics` returns only once every requested topic exists and shows in the
metadata (a topic someone else created meanwhile is fine), retrying while the broker is down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from lookout.kafka.config import KafkaConnection
from lookout.kafka.health import with_retry

log = logging.getLogger("lookout.kafka")


def topic_partitions(client: Any, topic: str, timeout: float = 5.0) -> list[int] | None:
    """The topic's partition ids (sorted), or None when it does not exist. `client` is any
    confluent-kafka client (Consumer, Producer, AdminClient): all answer `list_topics`."""
    t = client.list_topics(topic, timeout=timeout).topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        return None
    return sorted(t.partitions)


def ensure_topics(
    conn: KafkaConnection,
    topics: dict[str, int],
    stop: Callable[[], bool] = lambda: False,
    replication: int = 1,
    give_up_after: float | None = None,
    configs: dict[str, dict[str, str]] | None = None,
) -> dict[str, int]:
    """Create missing topics (name -> partitions; `replication` -1 = the broker's default; `configs`:
    topic settings such as cleanup.policy) and return every topic's partition count. Retries while
    the broker is unreachable, until `stop()` or `give_up_after` seconds."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(conn.client_config())

    def meta() -> dict[str, int]:
        md = admin.list_topics(timeout=5)
        return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}

    def retry(what: str, fn: Callable[[], Any]) -> Any:
        return with_retry(what, fn, conn.health, stop, give_up_after)

    existing = retry("reading topic metadata", meta)
    missing = [
        NewTopic(name, n, replication, config=(configs or {}).get(name, {})) for name, n in topics.items() if name not in existing
    ]
    if missing:

        def create() -> None:
            for name, fut in admin.create_topics(missing, operation_timeout=10, request_timeout=15).items():
                try:
                    fut.result()
                    log.info("kafka: created topic %s (%d partitions)", name, topics[name])
                except KafkaException as e:
                    if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise

        retry("creating topics " + ", ".join(t.topic for t in missing), create)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait until metadata shows them
            existing = retry("reading topic metadata", meta)
            if all(name in existing for name in topics):
                break
            time.sleep(0.1)
    return {name: existing.get(name, 0) for name in topics}
