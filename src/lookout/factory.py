"""What a run reads and writes, built in one place: `run`, `replay` and `ship` describe their input
with one options object per kind of source (`TailInput`, `KafkaInput`, `GeneratorInput`) and their
outputs with a `SinkPlan`; `open()` and `build_sinks()` turn those into a `Source` and a `SinkSet`.

Guarantee: the files sink is always first in the set (the other sinks hand it their dead letters,
and `SinkSet.flush` flushes it last, so those are durable in the same flush); an output directory
that cannot be written raises `OutputUnwritable` before any input is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lookout.rules import RuleSet
from lookout.sinks.base import Sink, SinkSet
from lookout.sinks.files import FileSink, OutputUnwritable
from lookout.sources.base import Source

if TYPE_CHECKING:
    from lookout.kafka.config import KafkaConnection
    from lookout.sources.tail import TailSource

DEFAULT_LATENESS_US = 10_000_000  # a Kafka source's idle watermark without rules (tests, tools)


@dataclass(frozen=True)
class TailInput:
    """An nginx access log followed as it grows (`run --tail`, `ship`): JSON or combined lines."""

    path: Path
    state_dir: Path
    log_format: str = "auto"
    host: str | None = None
    geoip: Path | None = None
    rotate_wait: float = 300.0  # seconds a rotated log is still read after its last growth
    backfill: bool = False  # first start: read the rotated files beside the log first

    kind = "tail"

    def open(self, rs: RuleSet | None = None) -> TailSource:
        from lookout.sources.tail import TailSource

        return TailSource(
            self.path,
            state_dir=self.state_dir,
            log_format=self.log_format,
            host=self.host,
            geoip=self.geoip,
            rotate_wait=self.rotate_wait,
            backfill=self.backfill,
        )


@dataclass(frozen=True)
class KafkaInput:
    """A Kafka topic (`run --kafka`), read by one instance at a time."""

    connection: KafkaConnection
    topic: str = "test-inter"
    partitions: int = 3  # for the topics lookout creates
    on_reset: str = "fail"  # the topic is not the log the checkpoint was taken from: fail | earliest

    kind = "kafka"

    def open(self, rs: RuleSet | None = None) -> Source:
        from lookout.sources.kafka import KafkaSource

        return KafkaSource(
            self.connection,
            self.topic,
            partitions=self.partitions,
            lateness=rs.lateness if rs is not None else DEFAULT_LATENESS_US,
            on_reset=self.on_reset,
        )


@dataclass(frozen=True)
class GeneratorInput:
    """Generated seed-format records (`run` without --tail or --kafka)."""

    rate: float = 100.0
    seed: int | None = None

    kind = "generator"

    def open(self, rs: RuleSet | None = None) -> Source:
        from lookout.sources.generator_source import GeneratorSource

        return GeneratorSource(self.rate, self.seed)


Input = TailInput | KafkaInput | GeneratorInput


@dataclass(frozen=True)
class SinkPlan:
    """Where results, dead letters and raw records go. Files always; the rest when named."""

    out_dir: Path
    append: bool = False  # a run appends to its files (and cuts them back on restore); replay starts them anew
    fsync: bool = False  # a run's flush must make them durable before it commits input
    store_dir: Path | None = None  # the embedded store (Parquet) for `count` / `search`
    retention_us: int | None = None  # event time the store keeps; None: all
    kafka: KafkaConnection | None = None  # results to the rules' topics, dead letters to `dlq_topic`
    dlq_topic: str = "test-inter-dlq"
    partitions: int = 3
    es_url: str | None = None  # raw records (and optionally results) to Elasticsearch


def build_sinks(rs: RuleSet, plan: SinkPlan) -> SinkSet:
    """The sinks of `plan`, files first. Raises `OutputUnwritable` for a directory it cannot write."""
    try:
        files = FileSink(plan.out_dir, [r.name for r in rs.rules], append=plan.append, fsync=plan.fsync)
    except OSError as e:
        raise OutputUnwritable(f"{plan.out_dir}: cannot write results there: {e.strerror or e}") from None
    sinks: list[Sink] = [files]
    if plan.store_dir is not None:
        from lookout.sinks.store import StoreSink

        try:
            sinks.append(StoreSink(plan.store_dir, retention_us=plan.retention_us))
        except OSError as e:
            raise OutputUnwritable(f"{plan.store_dir}: cannot keep the store there: {e.strerror or e}") from None
    if plan.kafka is not None:
        from lookout.sinks.kafka import KafkaSink

        sinks.append(KafkaSink(plan.kafka, dlq_topic=plan.dlq_topic, rules=rs, partitions=plan.partitions))
    if plan.es_url:
        from lookout.sinks.elasticsearch import ElasticsearchSink

        sinks.append(ElasticsearchSink.from_url(plan.es_url, rules=rs, on_rejected=files.write_rejected))
    return SinkSet(sinks)
