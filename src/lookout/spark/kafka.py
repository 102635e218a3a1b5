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

Heartbeats (issue 19): on Spark the watermark moves only with data, so the last windows of a
topic that goes quiet would never close. With `idleTimeoutMs`, a trigger that finds no new
offset in any partition for that long (every offset before has been read in an earlier
micro-batch: batches run one after another) plans a batch of one *heartbeat* row: `value`
null, `partition` -1, `beat_ts` = the wall clock in epoch microseconds, which the plan takes
as an event time that is no record (so the watermark becomes now − lateness: never past it for
live data; a backlog far behind the clock gets every window closed). One per idle period.
With `flushFile`, once that file exists, one heartbeat row at the end of time (`beat_ts` =
`flushTsUs`): the final flush a stopping `--duration` run asks for. Heartbeats are offsets
too (`beat`, `beat_ts`), so a restarted query replays them exactly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
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
from lookout.kafka.errors import KafkaDeliveryError

SOURCE_SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, beat_ts long"
BEAT_KEYS = ("beat", "beat_ts")  # offset entries that are no Kafka partition
_TIMEOUT = 10.0


def _connection(options: dict[str, str]) -> KafkaConnection:
    """`bootstrap.servers` and the `kafka.*` options (prefix dropped), as lookout's Kafka connection."""
    return KafkaConnection.from_spark_options(options)


def _option(options: dict[str, str], name: str) -> str | None:
    """Spark hands a data source its options with the keys lower-cased (a case-insensitive map)."""
    want = name.lower()
    return next((v for k, v in options.items() if k.lower() == want), None)


def _partitions(consumer: Any, topic: str) -> list[int]:
    return topic_partitions(consumer, topic, timeout=_TIMEOUT) or []


@dataclass
class KafkaPartition(InputPartition):
    partition: int
    start: int
    end: int


@dataclass
class BeatPartition(InputPartition):
    beat_ts: int  # epoch microseconds


class KafkaStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str]) -> None:
        self.options = dict(options)
        self.topic = self.options["topic"]
        self._consumer: Any = None
        self.idle_s = int(_option(self.options, "idleTimeoutMs") or 0) / 1000
        self.flush_file = _option(self.options, "flushFile")
        self.flush_ts = int(_option(self.options, "flushTsUs") or 0)
        self._quiet_since = time.monotonic()

    def _meta(self) -> Any:
        if self._consumer is None:
            from confluent_kafka import Consumer

            # quiet=False: tasks and this reader keep librdkafka's own logging (no health reporter here)
            conf = consumer_config(
                _connection(self.options),
                "lookout-spark-meta",
                quiet=False,
                **{"enable.partition.eof": True, "fetch.wait.max.ms": 10},
            )
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
        ends = self._ends(None, 1 if _option(self.options, "startingOffsets") == "latest" else 0)
        return ends | {"beat": 0, "beat_ts": 0}

    def latestOffset(self, start: dict | None = None, limit: Any = None) -> dict:  # noqa: N802
        start = start or {}
        known = {p: o for p, o in start.items() if p not in BEAT_KEYS}
        latest = self._ends(known, 1)
        for p, off in known.items():  # never move a partition back (e.g. a metadata hiccup); keep vanished ones
            latest[p] = max(latest.get(p, off), off)
        beat, beat_ts = int(start.get("beat", 0)), int(start.get("beat_ts", 0))
        now = time.monotonic()
        if latest != known:
            self._quiet_since = now
        flushed = bool(self.flush_ts) and beat_ts == self.flush_ts  # nothing can move the watermark further
        if self.flush_file and not flushed and os.path.exists(self.flush_file):
            beat, beat_ts = beat + 1, self.flush_ts
        elif self.idle_s and not flushed and now - self._quiet_since >= self.idle_s:
            beat, beat_ts = beat + 1, time.time_ns() // 1000
            self._quiet_since = now  # the next one after another idle period
        return latest | {"beat": beat, "beat_ts": beat_ts}

    def partitions(self, start: dict, end: dict) -> list[InputPartition]:
        parts: list[InputPartition] = []
        for p, hi in sorted(((p, o) for p, o in end.items() if p not in BEAT_KEYS), key=lambda kv: int(kv[0])):
            lo = start.get(p, 0)
            if hi > lo:
                parts.append(KafkaPartition(int(p), lo, hi))
        if int(end.get("beat", 0)) > int(start.get("beat", 0)):
            parts.append(BeatPartition(int(end["beat_ts"])))
        return parts

    def read(self, partition: InputPartition) -> Iterator[tuple]:  # type: ignore[override]
        if isinstance(partition, BeatPartition):
            yield (None, None, self.topic, -1, None, None, partition.beat_ts)
            return
        assert isinstance(partition, KafkaPartition)
        yield from self._read_kafka(partition)

    def _read_kafka(self, partition: KafkaPartition) -> Iterator[tuple]:
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        c = Consumer(consumer_config(_connection(self.options), "lookout-spark", quiet=False, **{"enable.partition.eof": True}))
        try:
            c.assign([TopicPartition(self.topic, partition.partition, partition.start)])
            pos = partition.start
            while pos < partition.end:
                msgs = c.consume(min(10_000, partition.end - pos), timeout=_TIMEOUT)
                if not msgs:
                    raise TimeoutError(
                        f"{self.topic}[{partition.partition}]: no message at offset {pos} "
                        f"(expected up to {partition.end}) within {_TIMEOUT} s"
                    )
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
                    yield (m.key(), m.value(), self.topic, partition.partition, off, ts, None)
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


def produce_all(options: dict[str, str], messages: Iterable[tuple]) -> int:
    """(topic, key, value) messages to Kafka through lookout's reliable producer (idempotent,
    acks=all); returns once all are acknowledged, raises KafkaDeliveryError otherwise."""
    from confluent_kafka import Producer

    p = Producer(producer_config(_connection(options), quiet=False, **{"linger.ms": 20}))
    errors: list[str] = []

    def done(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    n = 0
    for topic, key, value in messages:
        produce(p, topic, value, key, on_delivery=done)
        n += 1
        p.poll(0)
    left = p.flush(60)
    if left or errors:
        raise KafkaDeliveryError(f"kafka: {left} messages not delivered; errors: {errors[:3]}")
    return n


class KafkaStreamWriter(DataSourceStreamWriter):
    def __init__(self, options: dict[str, str]) -> None:
        self.options = dict(options)

    def write(self, iterator: Iterator[Any]) -> _Sent:
        def msgs() -> Iterator[tuple]:
            for row in iterator:
                d = row.asDict()
                yield (d.get("topic") or self.options["topic"], d.get("key"), d["value"])

        return _Sent(produce_all(self.options, msgs()))

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
    admin.ensure_topics(
        KafkaConnection(bootstrap, extra or {}), dict.fromkeys(topics, partitions), replication=-1, give_up_after=3 * _TIMEOUT
    )


def register(spark: Any) -> None:
    spark.dataSource.register(KafkaDataSource)
