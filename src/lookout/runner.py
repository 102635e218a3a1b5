"""`lookout run`: the long-running loop that owns delivery.

poll source → pipeline step → (every commit interval) flush sinks → checkpoint engine state and
source position atomically → commit the source. After a crash the next start restores the
checkpoint, cuts result files back to their checkpointed sizes and drops store files written
after it, then reads on from the checkpointed position: nothing lost, nothing counted twice.
SIGINT/SIGTERM end the loop at the next step with a final flush and checkpoint (exit 0).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from lookout.checkpoint import Checkpointer
from lookout.pipeline import Pipeline
from lookout.rules import RuleSet, parse_duration
from lookout.sinks.base import Sink, SinkSet
from lookout.sinks.files import FileSink
from lookout.sinks.store import StoreSink
from lookout.sources.base import Source

log = logging.getLogger("lookout.run")


class RunOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out_dir: Path = Path("lookout-out")
    state_dir: Path = Path(".lookout-state")
    rate: float = 100.0
    seed: int | None = None
    duration: float | None = None
    tail_path: Path | None = None
    log_format: str = "auto"
    log_host: str | None = None
    geoip: Path | None = None
    kafka: str | None = None
    topic: str = "test-inter"
    kafka_config: tuple[str, ...] = ()
    partitions: int = 3
    idle_timeout: float = 30.0  # seconds
    es_url: str | None = None
    view: bool = False
    commit_interval: float = 1.0
    retention: float | None = 7 * 86400.0  # seconds of event time the store keeps; None: all

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, v: Any) -> float | None:
        if v is None or (isinstance(v, str) and v.strip().lower() in ("off", "none", "0")):
            return None
        secs = parse_duration(v) / 1e6 if isinstance(v, str) else float(v)
        if secs <= 0:
            raise ValueError("--retention must be a positive duration (e.g. 7d) or `off`")
        return secs

    @field_validator("idle_timeout", mode="before")
    @classmethod
    def _idle(cls, v: Any) -> float:
        return parse_duration(v) / 1e6 if isinstance(v, str) else float(v)

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("--rate must be positive")
        return v

    def kafka_properties(self) -> dict[str, str]:
        return parse_properties(self.kafka_config)


def parse_properties(kvs: tuple[str, ...]) -> dict[str, str]:
    """`--kafka-config KEY=VALUE` pairs → librdkafka properties; ValueError names a bad one."""
    props = {}
    for kv in kvs:
        if "=" not in kv:
            raise ValueError(f"--kafka-config {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        props[k.strip()] = v.strip()
    return props


def make_source(opts: RunOptions, rs: RuleSet | None = None) -> Source:
    if opts.tail_path is not None:
        from lookout.sources.tail import TailSource

        return TailSource(opts.tail_path, state_dir=opts.state_dir, log_format=opts.log_format,
                          host=opts.log_host, geoip=opts.geoip)
    if opts.kafka:
        from lookout.sources.kafka import KafkaSource

        return KafkaSource(opts.kafka, opts.topic, config=opts.kafka_properties(), partitions=opts.partitions,
                           lateness=rs.lateness if rs is not None else 10_000_000)
    from lookout.sources.generator_source import GeneratorSource

    return GeneratorSource(opts.rate, opts.seed)


def make_sinks(rs: RuleSet, opts: RunOptions, files: FileSink) -> SinkSet:
    retention = None if opts.retention is None else int(opts.retention * 1e6)
    sinks: list[Sink] = [files, StoreSink(opts.state_dir / "store", retention_us=retention)]
    if opts.kafka:
        from lookout.sinks.kafka import KafkaSink

        sinks.append(KafkaSink(opts.kafka, dlq_topic=f"{opts.topic}-dlq", rules=rs,
                               config=opts.kafka_properties(), partitions=opts.partitions))
    if opts.es_url:
        from lookout.sinks.elasticsearch import ElasticsearchSink

        sinks.append(ElasticsearchSink.from_url(opts.es_url, rules=rs, on_rejected=files.write_rejected))
    return SinkSet(sinks)


class Runner:
    def __init__(self, rs: RuleSet, opts: RunOptions, source: Source | None = None) -> None:
        self.rs = rs
        self.opts = opts
        self.stop_requested = False
        self.sinks_aborted = False
        opts.state_dir.mkdir(parents=True, exist_ok=True)
        self.files = FileSink(opts.out_dir, [r.name for r in rs.rules], append=True, fsync=True)
        self.sinks = make_sinks(rs, opts, self.files)
        self.pipeline = Pipeline(rs, self.sinks)
        self.source = source or make_source(opts, rs)
        self.ckpt = Checkpointer(opts.state_dir)
        self.position: Any = None
        self.store = next(s for s in self.sinks.sinks if isinstance(s, StoreSink))
        self.view = None

    def _restore(self) -> None:
        """Engine, outputs and position back to the last whole commit (CheckpointError when the
        checkpoint cannot be used: it is never guessed around)."""
        state = self.ckpt.load(self.pipeline.engine)
        if state is None:
            self.source.restore(None)
            return
        self.files.truncate_to(state["files"])
        self.store.writer.drop_after(state["store_seq"])
        st = self.pipeline.stats
        for k, v in state.get("stats", {}).items():
            setattr(st, k, Counter(v) if isinstance(v, dict) else v)
        self.position = state["position"]
        self.source.restore(self.position)
        log.info("resumed from checkpoint at %s", self.position)

    def _commit(self) -> None:
        t0 = time.perf_counter()
        self.sinks.flush()
        t1 = time.perf_counter()
        st = self.pipeline.stats
        info = self.ckpt.save({
            "position": self.position,
            "files": self.files.sizes(),
            "store_seq": self.store.writer.seq,
            "stats": {"lines": st.lines, "records": st.records, "rejected": st.rejected, "late": st.late,
                      "reasons": dict(st.reasons), "results": dict(st.results)},
        }, self.pipeline.engine)
        t2 = time.perf_counter()
        self.source.commit(self.position)
        # Store upkeep (one bounded merge, retention) only touches what this checkpoint covers.
        self.store.writer.mark_committed()
        t3 = time.perf_counter()
        log.debug("commit: flush %.1f ms, checkpoint %.1f ms (%s, %d bytes), store upkeep %.1f ms, store files %d",
                  (t1 - t0) * 1e3, (t2 - t1) * 1e3, info.kind, info.nbytes, (t3 - t2) * 1e3,
                  self.store.writer.file_count())

    def _caught_up(self) -> bool:
        """Quiet input, not an unreachable broker: sources that can tell (Kafka) say so."""
        check = getattr(self.source, "caught_up", None)
        return True if check is None else bool(check())

    def request_stop(self, *_: Any) -> None:
        """First signal: stop after this step, flush, checkpoint, exit 0. A second one while a
        flush waits on an unreachable server abandons it: nothing unacknowledged is committed,
        and the next start reads those records again."""
        if self.stop_requested:
            log.warning("second stop signal: abandoning the pending flush (nothing uncommitted is lost; it is re-read on restart)")
            self.sinks_aborted = True
            self.sinks.abort()
            return
        self.stop_requested = True
        log.info("stopping: flushing and checkpointing (signal again to abandon a stuck flush)")

    def run(self) -> int:
        self._restore()
        if self.opts.view:
            from lookout.live import LiveView

            self.view = LiveView(self.rs, self.pipeline, self.source.name)
        started = time.monotonic()
        last_commit = time.monotonic()
        last_data = time.monotonic()
        idle_closed = True
        dirty = False
        try:
            if self.view:
                self.view.start()
            while not self.stop_requested:
                if self.opts.duration is not None and time.monotonic() - started >= self.opts.duration:
                    break
                chunk = self.source.poll(0.2)
                now = time.monotonic()
                if chunk is not None:
                    report = self.pipeline.step(chunk)
                    self.position = chunk.position
                    dirty = True
                    if report.records is not None and report.records.height:
                        last_data = now
                        idle_closed = False
                    if self.view:
                        self.view.update(report.results)
                elif not idle_closed and now - last_data >= self.opts.idle_timeout and self._caught_up():
                    # Input has been quiet: close every open window so the last minute is not
                    # stuck waiting for a record that may never come.
                    results = self.pipeline.close_windows()
                    idle_closed = True
                    dirty = True
                    log.info("input idle for %.0fs: closed open windows", self.opts.idle_timeout)
                    if self.view:
                        self.view.update(results)
                if self.view:
                    self.view.refresh()
                if dirty and now - last_commit >= self.opts.commit_interval:
                    self._commit()
                    last_commit = now
                    dirty = False
        finally:
            if self.view:
                self.view.stop()
        self._commit()
        self.ckpt.close()
        self.source.close()
        self.sinks.close()
        if not self.opts.view:
            from lookout.live import print_run_summary

            print_run_summary(self.pipeline.stats, str(self.opts.out_dir))
        return 0


def run_pipeline(rs: RuleSet, opts: RunOptions) -> int:
    level = os.environ.get("LOOKOUT_LOG_LEVEL", "INFO").upper()  # DEBUG: per-commit costs (bench/soak.py)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    stop = {"requested": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(requested=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    source = make_source(opts, rs)
    # A source with exclusive input (Kafka) may have to stand by until another instance stops.
    # Nothing in the state dir is touched before that: a standby may share it with the active one.
    acquire = getattr(source, "acquire", None)
    if acquire is not None and not acquire(lambda: stop["requested"]):
        source.close()
        return 0
    runner = Runner(rs, opts, source=source)
    runner.stop_requested = stop["requested"]
    signal.signal(signal.SIGINT, runner.request_stop)
    signal.signal(signal.SIGTERM, runner.request_stop)
    try:
        return runner.run()
    except Exception as e:  # noqa: BLE001
        if runner.sinks_aborted:
            log.error("stopped without committing the last steps (%s); they are read again on restart", e)
            return 1
        raise
