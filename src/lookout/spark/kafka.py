"""A Kafka source and sink for Spark on PySpark's Python Data Source API, over confluent-kafka.

Spark's own connector (spark-sql-kafka-0-10) comes from Maven; where that cannot be reached
(or is not wanted), `format("lookout-kafka")` reads and writes Kafka with the same shapes:

- source: rows (key, value, topic, partition, offset, timestamp); offsets are Spark's, kept in
  the query checkpoint as {partition: next offset}, so a restarted query resumes exactly; one
  Spark partition per Kafka partition and micro-batch, read with `assign` (no consumer group);
- sink: rows (topic, key, value), strings or bytes, produced by each task and flushed before
  the task reports success (at-least-once, as Spark's own Kafka sink).

Options: bootstrap.servers, topic (source), startingOffsets (earliest|latest), and any other
`kafka.*` option passed to librdkafka without its prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyspark.sql.datasource import (
    DataSource,
    DataSourceStreamReader,
    DataSourceStreamWriter,
    InputPartition,
    WriterCommitMessage,
)

from lookout.kafka import admin
from lookout.kafka.admin import topic_partitions
from lookout.kafka.clients import consumer_config, produce, producer_config
from lookout.kafka.config import KafkaConnection

SOURCE_SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
_TIMEOUT = 10.0


def _connection(options: dict[str, str]) -> KafkaConnection:
    """`bootstrap.servers` and the `kafka.*` options (prefix dropped), as lookout's Kafka connection."""
    return KafkaConnection.from_spark_options(options)


def _partitions(consumer: Any, topic: str) -> list[int]:
    return topic_partitions(consumer, topic, timeout=_TIMEOUT) or []


@dataclass
class KafkaPartition(InputPartition):
    partition: int
    start: int
    end: int


class KafkaStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str]) -> None:
        self.options = dict(options)
        self.topic = self.options["topic"]
        self._consumer: Any = None

    def _meta(self) -> Any:
        if self._consumer is None:
            from confluent_kafka import Consumer

            # quiet=False: tasks and this reader keep librdkafka's own logging (no health reporter here)
            conf = consumer_config(_connection(self.options), "lookout-spark-meta", quiet=False,
                                   **{"enable.partition.eof": True, "fetch.wait.max.ms": 10})
            self._consumer = Consumer(conf)
        return self._consumer

    def _ends(self, known: dict[str, int] | None, which: int) -> dict[str, int]:
        """Next offset per partition: the broker's watermark (low or high), then — for the end —
        checked by reading on from it until the partition reports its end. The high watermark is
        only a hint: some brokers (Tansu, the test broker) report the number of record batches."""
        from confluent_kafka import KafkaError, TopicPartition

        c = self._meta()
        out = {}
        for p in _partitions(c, self.topic):
            lo, hi = c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=_TIMEOUT, cached=False)
            if which == 0:
                out[str(p)] = lo
                continue
            pos = max(hi, (known or {}).get(str(p), lo))
            c.assign([TopicPartition(self.topic, p, pos)])
            done = False
            while not done:
                msgs = c.consume(10_000, timeout=1.0)
                if not msgs:
                    break
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                            done = True
                            break
                        raise RuntimeError(f"kafka: {err}")
                    pos = m.offset() + 1
            out[str(p)] = pos
        c.unassign()
        return out

    def initialOffset(self) -> dict:  # noqa: N802 - Spark's API
        if self.options.get("startingOffsets") == "latest":
            return self._ends(None, 1)
        return self._ends(None, 0)

    def latestOffset(self, start: dict | None = None, limit: Any = None) -> dict:  # noqa: N802
        latest = self._ends(start, 1)
        if start:  # never move a partition back (e.g. a metadata hiccup); keep vanished ones
            for p, off in start.items():
                latest[p] = max(latest.get(p, off), off)
        return latest

    def partitions(self, start: dict, end: dict) -> list[KafkaPartition]:
        parts = []
        for p, hi in sorted(end.items(), key=lambda kv: int(kv[0])):
            lo = start.get(p, 0)
            if hi > lo:
                parts.append(KafkaPartition(int(p), lo, hi))
        return parts

    def read(self, partition: KafkaPartition) -> Iterator[tuple]:  # type: ignore[override]
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        c = Consumer(consumer_config(_connection(self.options), "lookout-spark", quiet=False, **{"enable.partition.eof": True}))
        try:
            c.assign([TopicPartition(self.topic, partition.partition, partition.start)])
            pos = partition.start
            while pos < partition.end:
                msgs = c.consume(min(10_000, partition.end - pos), timeout=_TIMEOUT)
                if not msgs:
                    raise TimeoutError(f"{self.topic}[{partition.partition}]: no message at offset {pos} "
                                       f"(expected up to {partition.end}) within {_TIMEOUT} s")
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                            continue
                        raise RuntimeError(f"kafka: {err}")
                    off = m.offset()
                    if off >= partition.end:
                        pos = partition.end
                        break
                    pos = off + 1
                    _, ts_ms = m.timestamp()
                    ts = datetime.fromtimestamp(ts_ms / 1000, tz=UTC) if ts_ms and ts_ms > 0 else None
                    yield (m.key(), m.value(), self.topic, partition.partition, off, ts)
        finally:
            c.close()

    def commit(self, end: dict) -> None:
        pass  # offsets live in Spark's checkpoint

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


@dataclass
class _Sent(WriterCommitMessage):
    count: int


class KafkaStreamWriter(DataSourceStreamWriter):
    def __init__(self, options: dict[str, str]) -> None:
        self.options = dict(options)

    def write(self, iterator: Iterator[Any]) -> _Sent:
        from confluent_kafka import Producer

        p = Producer(producer_config(_connection(self.options), quiet=False, **{"linger.ms": 20}))
        errors: list[str] = []

        def done(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        n = 0
        for row in iterator:
            d = row.asDict()
            topic = d.get("topic") or self.options["topic"]
            produce(p, topic, d["value"], d.get("key"), on_delivery=done)
            n += 1
            p.poll(0)
        left = p.flush(60)
        if left or errors:
            raise RuntimeError(f"kafka: {left} messages not delivered; errors: {errors[:3]}")
        return _Sent(n)

    def commit(self, messages: list, batchId: int) -> None:  # noqa: N803
        pass

    def abort(self, messages: list, batchId: int) -> None:  # noqa: N803
        pass


class KafkaDataSource(DataSource):
    """format("lookout-kafka")."""

    @classmethod
    def name(cls) -> str:
        return "lookout-kafka"

    def schema(self) -> str:
        return SOURCE_SCHEMA

    def streamReader(self, schema: Any) -> KafkaStreamReader:  # noqa: N802
        return KafkaStreamReader(self.options)

    def streamWriter(self, schema: Any, overwrite: bool) -> KafkaStreamWriter:  # noqa: N802
        return KafkaStreamWriter(self.options)


def ensure_topics(bootstrap: str, topics: list[str], partitions: int = 3, extra: dict[str, str] | None = None) -> None:
    """Create the topics that do not exist yet (results and dead letters are written by tasks,
    which should not depend on the broker auto-creating topics). Replication: the broker's default."""
    admin.ensure_topics(KafkaConnection(bootstrap, extra or {}), dict.fromkeys(topics, partitions),
                        replication=-1, give_up_after=3 * _TIMEOUT)


def register(spark: Any) -> None:
    spark.dataSource.register(KafkaDataSource)
