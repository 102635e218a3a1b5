"""`lookout spark`: the rules as one Spark Structured Streaming application.

One streaming query: the input parsed once (compile.py); results, rejected lines and late
records all come out of one stateful operator (panes.py), formatted; a foreachBatch sink
delivers them: files (DIR/<rule>.jsonl, DIR/rejected.jsonl) or Kafka topics.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookout.errors import LookoutError
from lookout.rules import RuleSet
from lookout.sinks.files import REJECTED_FILE
from lookout.spark.compile import check_rules, compile_plan
from lookout.spark.flush import FLUSH_LINE, FLUSH_TS_US
from lookout.spark.format import messages

DLQ_SUFFIX = "-dlq"
log = logging.getLogger(__name__)


class SparkQueryFailed(LookoutError):
    """The streaming query stopped with an error, or the final flush did not complete."""


@dataclass
class SparkStats:
    """What the queries report (Spark's progress), for the command's summary."""

    input_rows: int = 0
    results: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    late: int = 0  # records late for some rule (each dead-lettered, reason `late`)
    connector: str | None = None  # Kafka: "spark-sql-kafka-0-10" or "lookout-kafka"
    batches: int = 0
    batch_seconds: list[float] = field(default_factory=list)  # each micro-batch's triggerExecution
    seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def add_progress(self, results_progress: list[dict[str, Any]]) -> None:
        for p in results_progress:
            self.batches += 1
            self.input_rows += int(p.get("numInputRows") or 0)
            self.batch_seconds.append(round((p.get("durationMs") or {}).get("triggerExecution", 0) / 1000, 2))

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": "spark",
            "input_rows": self.input_rows,
            "rejected": self.rejected,
            "results": dict(self.results),
            "late": self.late,
            **({"connector": self.connector} if self.connector else {}),
            "batches": self.batches,
            "batch_seconds": list(self.batch_seconds),
            "seconds": round(self.seconds, 3),
        }


def build_query(  # noqa: ANN201
    lines,  # noqa: ANN001
    rs: RuleSet,
    dlq_topic: str,
    sources: dict[str, str] | None = None,
    fresh: bool = False,
    stage: str | None = None,
):
    """Streaming `lines` (value, source, partition, offset, flush_ts) → panes.OUTPUT_SCHEMA rows."""
    check_rules(rs)
    return compile_plan(lines, rs, dlq_topic, sources, fresh, stage)


def _rows(batch_df) -> list[tuple]:  # noqa: ANN001
    """A micro-batch's output rows on the driver, in ONE job: every state partition runs at once
    (toLocalIterator ran one job per partition, one after another: the stateful stage on one core)."""
    return [tuple(r) for r in batch_df.collect()]


# ------------------------------------------------------------------------------- files mode


class _FileWriter:
    """foreachBatch sink: appends each message's value to DIR/<topic>.jsonl (the output is small:
    aggregated rows, rejected lines and late records)."""

    def __init__(self, out_dir: Path, files: dict[str, str], counts: dict[str, int]) -> None:
        self.out_dir = out_dir
        self.files = files  # topic -> file name
        self.counts = counts
        self.late = 0
        self.lock = threading.Lock()

    def __call__(self, batch_df, batch_id: int) -> None:  # noqa: ANN001
        by_topic: dict[str, list[str]] = {}
        msgs, late = messages(_rows(batch_df))
        self.late += late
        for topic, _key, value in msgs:
            by_topic.setdefault(topic, []).append(value)
        with self.lock:
            for topic, lines in by_topic.items():
                with open(self.out_dir / self.files[topic], "a", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
                self.counts[topic] = self.counts.get(topic, 0) + len(lines)


STAGE_CHUNK_BYTES = 32 << 20  # staged chunk files, each read as splits parsed at once
CHUNK_CONF = "spark.lookout.chunkBytes"  # --conf to stage smaller chunks (tests: many batches and splits)
FILES_PER_BATCH = 8  # chunks per micro-batch (256 MB): the watermark moves and state is freed between them


def _stage_inputs(inputs: list[str], stage: Path, chunk_bytes: int = STAGE_CHUNK_BYTES) -> dict[str, str]:
    """Copy the inputs (plain, .gz or `-`) into numbered chunk files of whole lines, read
    FILES_PER_BATCH a micro-batch (maxFilesPerTrigger, in modification-time order), then the
    end-of-input line. One huge batch would hold every window of the input in the state store at once.
    Returns chunk file name → the input path as given (the dead letters' `source`)."""
    from lookout.sources.files import file_chunks
    from lookout.spark.arrow_parse import CHUNK_NAME

    stage.mkdir(parents=True)
    names: dict[str, str] = {}
    base = time.time() - 86_400
    seq = 0
    for p in inputs:
        for chunk in file_chunks(p, chunk_bytes):
            name = CHUNK_NAME.format(seq)
            # Lines end at "\n" only, as in replay (Spark's default also splits at a bare "\r"),
            # and a "\r" before it is no part of the line (records.split_lines).
            data = chunk.data or b""
            data = (data if data.endswith(b"\n") else data + b"\n").replace(b"\r\n", b"\n")
            (stage / name).write_bytes(data)
            os.utime(stage / name, (base + seq, base + seq))
            names[name] = chunk.source
            seq += 1
    flush = stage / f"{seq:06d}{FLUSH_SUFFIX}"
    flush.write_text(FLUSH_LINE + "\n")
    os.utime(flush, (base + seq, base + seq))
    return names


FLUSH_SUFFIX = ".end-of-input"  # the staged file holding the end-of-input line (no input ends so)


def run_files(
    inputs: list[str],
    rs: RuleSet,
    out_dir: Path,
    master: str | None = None,
    conf: dict[str, str] | None = None,
    checkpoint: str | None = None,
    spark=None,
) -> SparkStats:  # noqa: ANN001
    """NDJSON files in, DIR/<rule>.jsonl and DIR/rejected.jsonl out, like `lookout replay`.
    Trigger availableNow; the end-of-input line then closes every window."""
    from pyspark.sql import functions as F

    from lookout.spark.arrow_parse import PART_SHIFT
    from lookout.spark.session import build_session

    check_rules(rs)
    stats = SparkStats()
    work = Path(tempfile.mkdtemp(prefix="lookout-spark-"))
    ck = Path(checkpoint) if checkpoint else work / "checkpoint"
    if ck.exists():
        shutil.rmtree(ck)  # files mode always starts over, as lookout replay does
    try:
        chunk = int((conf or {}).get(CHUNK_CONF, STAGE_CHUNK_BYTES))
        sources = _stage_inputs(inputs, work / "input", chunk)
        # A chunk is read as splits parsed at once (one per core, Spark's default split size);
        # each split's summary row carries its running maximum on to the records of the splits
        # after it (arrow_parse.py, panes.py), so lateness is judged per record as replay does.
        spark = spark or build_session(master, conf)
        if "spark.sql.shuffle.partitions" not in (conf or {}):
            # one state partition per core: the buckets are balanced over them (compile.py), and
            # each partition's state store costs a load and a commit per batch (a fresh checkpoint
            # each run, so the count is free to follow the cores)
            spark.conf.set("spark.sql.shuffle.partitions", str(spark.sparkContext.defaultParallelism))
        if "spark.sql.files.maxPartitionBytes" not in (conf or {}):
            # half a chunk a task: Spark's own split (the batch over the cores) packed 6 chunks
            # into 3 tasks on 2 cores, the third alone after the others; many equal tasks balance
            spark.conf.set("spark.sql.files.maxPartitionBytes", str(max(chunk // 2, 1 << 20)))
        lines = (
            spark.readStream.option("maxFilesPerTrigger", FILES_PER_BATCH)
            .option("lineSep", "\n")
            .text(str(work / "input"))
            .withColumn("source", F.input_file_name())
            # input order of splits, across the chunk files of a batch: (chunk number, split start)
            .withColumn(
                "part",
                F.regexp_extract("source", r"(\d+)\.[^/]*$", 1).cast("long") * F.lit(1 << PART_SHIFT)
                + F.col("_metadata.file_block_start"),
            )
            .withColumn("partition", F.lit(None).cast("int"))
            .withColumn("offset", F.lit(None).cast("long"))
            .withColumn("flush_ts", F.when(F.col("source").endswith(FLUSH_SUFFIX), F.lit(FLUSH_TS_US)))
        )
        out = build_query(lines, rs, "rejected", sources, fresh=True, stage=str(work / "input"))
        # The end-of-input row closes every window in its own batch (panes.FLUSH), and a data
        # batch closes what the watermark of the batches before it closes: the batch Spark would
        # run only to move the watermark would cost a job over every state partition for nothing.
        spark.conf.set("spark.sql.streaming.noDataMicroBatches.enabled", "false")
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {r.name: f"{r.name}.jsonl" for r in rs.rules} | {"rejected": REJECTED_FILE}
        for name in files.values():
            (out_dir / name).write_bytes(b"")
        counts: dict[str, int] = {}
        writer = _FileWriter(out_dir, files, counts)
        q = (
            out.writeStream.queryName("lookout")
            .outputMode("append")
            .foreachBatch(writer)
            .option("checkpointLocation", str(ck / "results"))
            .trigger(availableNow=True)
            .start()
        )
        q.awaitTermination()
        stats.add_progress(q.recentProgress)
        stats.input_rows = max(0, stats.input_rows - 1)  # the end-of-input line
        stats.late = writer.late
        stats.rejected = counts.pop("rejected", 0) - writer.late
        stats.results = {r.name: counts.get(r.name, 0) for r in rs.rules}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats.seconds = time.perf_counter() - stats.started
    return stats


# ------------------------------------------------------------------------------- kafka mode


class _KafkaWriter:
    """foreachBatch sink: each micro-batch's messages to their topics, through Spark's own Kafka
    sink when its connector is used, through lookout.spark.kafka's producer otherwise; the
    batch only commits once every message is acknowledged (at least once)."""

    def __init__(self, spark, bootstrap: str, use_spark: bool, stats: SparkStats) -> None:  # noqa: ANN001
        self.spark = spark
        self.bootstrap = bootstrap
        self.use_spark = use_spark
        self.stats = stats

    def __call__(self, batch_df, batch_id: int) -> None:  # noqa: ANN001
        msgs, late = messages(_rows(batch_df))
        self.stats.late += late
        if not msgs:
            return
        if self.use_spark:
            (
                self.spark.createDataFrame(msgs, "topic string, key string, value string")
                .write.format("kafka")
                .option("kafka.bootstrap.servers", self.bootstrap)
                .save()
            )
        else:
            from lookout.spark.kafka import produce_all

            produce_all({"bootstrap.servers": self.bootstrap}, msgs)


def kafka_connector_available(spark) -> bool:  # noqa: ANN001
    """Is Spark's own Kafka connector (spark-sql-kafka-0-10) on the classpath?"""
    try:
        spark._jvm.java.lang.Class.forName("org.apache.spark.sql.kafka010.KafkaSourceProvider")  # noqa: SLF001
        return True
    except Exception:  # noqa: BLE001 - py4j raises its own error type for ClassNotFoundException
        return False


def run_kafka(
    bootstrap: str,
    topic: str,
    rs: RuleSet,
    master: str | None = None,
    conf: dict[str, str] | None = None,
    checkpoint: str | None = None,
    starting_offsets: str = "earliest",
    duration: float | None = None,
    connector: str = "auto",
    on_progress: Callable[[SparkStats], None] | None = None,
    idle_timeout: float = 30.0,
    spark=None,
) -> SparkStats:  # noqa: ANN001
    """Read `topic`, write each rule's results to its topic and dead letters to `<topic>-dlq`.
    Runs until stopped (or `duration` seconds, then every open window is closed and emitted, as
    at the end of `--input`). Offsets and window state live in `checkpoint`. With the Python
    connector, input idle for `idle_timeout` seconds moves the watermark to now − lateness
    (kafka.py: heartbeats), so the last windows close without waiting for more traffic."""
    from pyspark.sql import functions as F

    from lookout.spark.session import build_session

    check_rules(rs)
    spark = spark or build_session(master, conf)
    use_spark = connector == "spark" or (connector == "auto" and kafka_connector_available(spark))
    ck = Path(checkpoint or ".lookout-state/spark")
    if use_spark:
        log.warning(
            "Spark's own Kafka connector: no heartbeats (--idle-timeout) and no final flush at the end of "
            "--duration; windows close only as new records move the watermark (docs/spark.md)"
        )
    control = Path(tempfile.mkdtemp(prefix="lookout-spark-control-"))
    flush_file = control / "flush"  # created when --duration is up: the sources then send the final flush
    if use_spark:
        raw = (
            spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", bootstrap)
            .option("subscribe", topic)
            .option("startingOffsets", starting_offsets)
            .load()
            .withColumn("beat_ts", F.lit(None).cast("long"))
        )
    else:
        from lookout.spark.kafka import ensure_topics, register

        ensure_topics(bootstrap, [topic, topic + DLQ_SUFFIX, *[r.name for r in rs.rules]])
        register(spark)
        raw = (
            spark.readStream.format("lookout-kafka")
            .option("bootstrap.servers", bootstrap)
            .option("topic", topic)
            .option("startingOffsets", starting_offsets)
            .option("idleTimeoutMs", str(round(idle_timeout * 1000)))
            .option("flushFile", str(flush_file))
            .option("flushTsUs", str(FLUSH_TS_US))
            .load()
        )
    # binary → string keeps the bytes (no decoding): parse() sees invalid UTF-8 and rejects it.
    lines = raw.select(
        F.col("value").cast("string").alias("value"),
        F.lit(topic).alias("source"),
        F.col("partition").cast("int").alias("partition"),
        F.col("offset").cast("long").alias("offset"),
        F.col("beat_ts").alias("flush_ts"),
    )
    out = build_query(lines, rs, topic + DLQ_SUFFIX)
    stats = SparkStats(connector="spark-sql-kafka-0-10" if use_spark else "lookout-kafka")
    log.info("kafka connector: %s", stats.connector)
    if on_progress is not None:
        on_progress(stats)
    sink = _KafkaWriter(spark, bootstrap, use_spark, stats)
    queries = [
        out.writeStream.queryName("lookout")
        .outputMode("append")
        .foreachBatch(sink)
        .option("checkpointLocation", str(ck / "results"))
        .start()
    ]
    deadline = None if duration is None else time.monotonic() + duration
    seen: set[tuple[str, int]] = set()

    def poll() -> None:
        queries[0].awaitTermination(1.0)
        new = [p for p in queries[0].recentProgress if ("r", p["batchId"]) not in seen]
        seen.update(("r", p["batchId"]) for p in new)
        stats.add_progress(new)
        if new and on_progress is not None:
            on_progress(stats)

    try:
        while all(q.isActive for q in queries):
            if deadline is not None and time.monotonic() >= deadline:
                if not use_spark:
                    _final_flush(queries, flush_file, poll)
                break
            poll()
        for q in queries:
            if q.exception() is not None:
                raise SparkQueryFailed(f"query {q.name} failed: {q.exception()}")
    finally:
        for q in queries:
            q.stop()
        shutil.rmtree(control, ignore_errors=True)
    stats.seconds = time.perf_counter() - stats.started
    return stats


FLUSH_WAIT_S = 300.0


def _flushed(query) -> bool:  # noqa: ANN001
    """Has `query` completed a micro-batch that read the final flush row? (Its offset is in the
    source's `beat_ts`; the results query also evicts every window in the batch right after,
    a no-data batch Spark runs at once when the watermark has moved.)"""
    for p in reversed(query.recentProgress):
        for src in p.get("sources") or []:
            end = src.get("endOffset")
            end = json.loads(end) if isinstance(end, str) else end
            if isinstance(end, dict) and end.get("beat_ts") == FLUSH_TS_US:
                return True
    return False


def _final_flush(queries: list, flush_file: Path, poll: Callable[[], None]) -> None:
    """End of --duration: every open window closed and emitted, as at the end of --input."""
    flush_file.touch()
    limit = time.monotonic() + FLUSH_WAIT_S
    while time.monotonic() < limit and all(q.isActive for q in queries):
        poll()
        if all(_flushed(q) for q in queries):
            # the eviction batch comes after the batch that read the flush row
            wm = [p.get("eventTime", {}).get("watermark", "") for p in queries[0].recentProgress]
            if any(w.startswith("9999") for w in wm):
                return
    raise SparkQueryFailed(f"the final flush did not complete within {FLUSH_WAIT_S:.0f} s")
