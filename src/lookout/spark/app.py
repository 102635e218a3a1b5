"""`lookout spark`: the rules as one Spark Structured Streaming application.

Two streaming queries share one plan of the input: `results` (every rule, parsed once, one
aggregation) and `dead-letters` (lines that break the record contract). A query has one sink and
a stateful aggregation only emits closed windows, so rejected lines, which must go out at once,
get their own query over the same input.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lookout.rules import RuleSet
from lookout.sinks.files import REJECTED_FILE
from lookout.spark.compile import check_rules, compile_rules
from lookout.spark.format import dead_letter_message, result_column
from lookout.spark.parse import FLUSH_LINE, parse, reject_future

DLQ_SUFFIX = "-dlq"


@dataclass
class SparkStats:
    """What the queries report (Spark's progress), for the command's summary."""

    input_rows: int = 0
    results: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    dropped_late: int = 0  # Spark's numRowsDroppedByWatermark: (rule, window, key) rows, not records
    batches: int = 0
    seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def add_progress(self, results_progress: list[dict[str, Any]]) -> None:
        for p in results_progress:
            self.batches += 1
            self.input_rows += int(p.get("numInputRows") or 0)
            for op in p.get("stateOperators") or []:
                self.dropped_late += int(op.get("numRowsDroppedByWatermark") or 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": "spark",
            "input_rows": self.input_rows,
            "rejected": self.rejected,
            "results": dict(self.results),
            "dropped_late_rows": self.dropped_late,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
        }


def build_queries(lines, rs: RuleSet, dlq_topic: str, sources: dict[str, str] | None = None):  # noqa: ANN001, ANN201
    """Streaming `lines` (value, source, partition, offset) → (results, dead letters), each a
    streaming DataFrame of (topic, key, value) messages: the shape Spark's Kafka sink takes."""
    from pyspark.sql import functions as F

    check_rules(rs)
    parsed = reject_future(parse(lines), rs.max_future)  # before withWatermark (compile_rules)
    valid = parsed.filter(F.col("reason").isNull())
    results = compile_rules(valid, rs).select(result_column(rs).alias("m")).select("m.*")
    dl = dead_letter_message(dlq_topic, sources)
    rejected = parsed.filter(F.col("reason").isNotNull() & ~F.col("flush")).select(
        dl(F.col("reason"), F.col("detail"), F.col("value"), F.col("source"),
           F.col("partition"), F.col("offset")).alias("m")).select("m.*")
    return results, rejected


# ------------------------------------------------------------------------------- files mode

class _FileWriter:
    """foreachBatch sink: appends each message's value to DIR/<topic>.jsonl (results are small:
    aggregated rows and rejected lines)."""

    def __init__(self, out_dir: Path, files: dict[str, str], counts: dict[str, int]) -> None:
        self.out_dir = out_dir
        self.files = files  # topic -> file name
        self.counts = counts
        self.lock = threading.Lock()

    def __call__(self, batch_df, batch_id: int) -> None:  # noqa: ANN001
        by_topic: dict[str, list[str]] = {}
        for row in batch_df.select("topic", "value").toLocalIterator():
            by_topic.setdefault(row[0], []).append(row[1])
        with self.lock:
            for topic, lines in by_topic.items():
                with open(self.out_dir / self.files[topic], "a", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
                self.counts[topic] = self.counts.get(topic, 0) + len(lines)


STAGE_CHUNK_BYTES = 32 << 20  # one micro-batch each: the watermark moves and state is freed between them


def _stage_inputs(inputs: list[str], stage: Path, chunk_bytes: int = STAGE_CHUNK_BYTES) -> dict[str, str]:
    """Copy the inputs (plain, .gz or `-`) into numbered chunk files of whole lines, one
    micro-batch each (maxFilesPerTrigger=1, in modification-time order), then the end-of-input
    line. One huge batch would hold every window of the input in the state store at once.
    Returns chunk file name → the input path as given (the dead letters' `source`)."""
    from lookout.sources.files import file_chunks

    stage.mkdir(parents=True)
    names: dict[str, str] = {}
    base = time.time() - 86_400
    seq = 0
    for p in inputs:
        for chunk in file_chunks(p, chunk_bytes):
            name = f"{seq:06d}.ndjson"
            data = chunk.data or b""
            (stage / name).write_bytes(data if data.endswith(b"\n") else data + b"\n")
            os.utime(stage / name, (base + seq, base + seq))
            names[name] = chunk.source
            seq += 1
    flush = stage / f"{seq:06d}.ndjson"
    flush.write_text(FLUSH_LINE + "\n")
    os.utime(flush, (base + seq, base + seq))
    return names


def run_files(inputs: list[str], rs: RuleSet, out_dir: Path, master: str | None = None,
              conf: dict[str, str] | None = None, checkpoint: str | None = None, spark=None) -> SparkStats:  # noqa: ANN001
    """NDJSON files in, DIR/<rule>.jsonl and DIR/rejected.jsonl out, like `lookout replay`.
    Trigger availableNow; the end-of-input line then closes every window."""
    from pyspark.sql import functions as F

    from lookout.spark.session import build_session

    check_rules(rs)
    stats = SparkStats()
    work = Path(tempfile.mkdtemp(prefix="lookout-spark-"))
    ck = Path(checkpoint) if checkpoint else work / "checkpoint"
    if ck.exists():
        shutil.rmtree(ck)  # files mode always starts over, as lookout replay does
    try:
        sources = _stage_inputs(inputs, work / "input")
        spark = spark or build_session(master, conf)
        lines = (spark.readStream.option("maxFilesPerTrigger", 1).text(str(work / "input"))
                 .withColumn("source", F.input_file_name())
                 .withColumn("partition", F.lit(None).cast("int"))
                 .withColumn("offset", F.lit(None).cast("long")))
        results, rejected = build_queries(lines, rs, "rejected", sources)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {r.name: f"{r.name}.jsonl" for r in rs.rules} | {"rejected": REJECTED_FILE}
        for name in files.values():
            (out_dir / name).write_bytes(b"")
        counts: dict[str, int] = {}
        writer = _FileWriter(out_dir, files, counts)
        qr = (results.writeStream.queryName("lookout-results").outputMode("append").foreachBatch(writer)
              .option("checkpointLocation", str(ck / "results")).trigger(availableNow=True).start())
        qd = (rejected.writeStream.queryName("lookout-dead-letters").outputMode("append").foreachBatch(writer)
              .option("checkpointLocation", str(ck / "dead-letters")).trigger(availableNow=True).start())
        qr.awaitTermination()
        qd.awaitTermination()
        stats.add_progress(qr.recentProgress)
        stats.input_rows = max(0, stats.input_rows - 1)  # the end-of-input line
        stats.rejected = counts.pop("rejected", 0)
        stats.results = {r.name: counts.get(r.name, 0) for r in rs.rules}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats.seconds = time.perf_counter() - stats.started
    return stats


# ------------------------------------------------------------------------------- kafka mode

def kafka_connector_available(spark) -> bool:  # noqa: ANN001
    """Is Spark's own Kafka connector (spark-sql-kafka-0-10) on the classpath?"""
    try:
        spark._jvm.java.lang.Class.forName("org.apache.spark.sql.kafka010.KafkaSourceProvider")  # noqa: SLF001
        return True
    except Exception:  # noqa: BLE001 - py4j raises its own error type for ClassNotFoundException
        return False


def run_kafka(bootstrap: str, topic: str, rs: RuleSet, master: str | None = None,
              conf: dict[str, str] | None = None, checkpoint: str | None = None,
              starting_offsets: str = "earliest", duration: float | None = None,
              connector: str = "auto", on_progress: Callable[[SparkStats], None] | None = None,
              spark=None) -> SparkStats:  # noqa: ANN001
    """Read `topic`, write each rule's results to its topic and dead letters to `<topic>-dlq`.
    Runs until stopped (or `duration` seconds). Offsets and window state live in `checkpoint`."""
    from pyspark.sql import functions as F

    from lookout.spark.session import build_session

    check_rules(rs)
    spark = spark or build_session(master, conf)
    use_spark = connector == "spark" or (connector == "auto" and kafka_connector_available(spark))
    ck = Path(checkpoint or ".lookout-state/spark")
    if use_spark:
        raw = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
               .option("subscribe", topic).option("startingOffsets", starting_offsets).load())
    else:
        from lookout.spark.kafka import ensure_topics, register

        ensure_topics(bootstrap, [topic, topic + DLQ_SUFFIX, *[r.name for r in rs.rules]])
        register(spark)
        raw = (spark.readStream.format("lookout-kafka").option("bootstrap.servers", bootstrap)
               .option("topic", topic).option("startingOffsets", starting_offsets).load())
    lines = raw.select(F.col("value").cast("string").alias("value"), F.lit(topic).alias("source"),
                       F.col("partition").cast("int").alias("partition"), F.col("offset").cast("long").alias("offset"))
    results, rejected = build_queries(lines, rs, topic + DLQ_SUFFIX)
    queries = []
    for name, df in (("results", results), ("dead-letters", rejected)):
        w = df.writeStream.queryName(f"lookout-{name}").outputMode("append").option("checkpointLocation", str(ck / name))
        if use_spark:
            w = w.format("kafka").option("kafka.bootstrap.servers", bootstrap)
        else:
            w = w.format("lookout-kafka").option("bootstrap.servers", bootstrap)
        queries.append(w.start())
    stats = SparkStats()
    deadline = None if duration is None else time.monotonic() + duration
    seen: set[tuple[str, int]] = set()
    try:
        while all(q.isActive for q in queries):
            if deadline is not None and time.monotonic() >= deadline:
                break
            queries[0].awaitTermination(1.0)
            new = [p for p in queries[0].recentProgress if ("r", p["batchId"]) not in seen]
            seen.update(("r", p["batchId"]) for p in new)
            stats.add_progress(new)
            if new and on_progress is not None:
                on_progress(stats)
        for q in queries:
            if q.exception() is not None:
                raise RuntimeError(f"query {q.name} failed: {q.exception()}")
    finally:
        for q in queries:
            q.stop()
    stats.seconds = time.perf_counter() - stats.started
    return stats
