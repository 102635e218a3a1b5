"""`lookout run`: the long-running loop that owns delivery.

poll source → pipeline step → (every commit interval) flush sinks → checkpoint engine state and
source position atomically → commit the source. After a crash the next start restores the
checkpoint, cuts result files back to their checkpointed sizes and drops store files written
after it, then reads on from the checkpointed position: nothing lost, nothing counted twice.
SIGINT/SIGTERM end the loop at the next step with a final flush and checkpoint (exit 0).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import pickle
import signal
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from lookout.pipeline import Pipeline
from lookout.rules import RuleSet, parse_duration
from lookout.safe_text import setup_logging
from lookout.sinks.base import Sink, SinkSet
from lookout.sinks.files import FileSink
from lookout.sinks.store import StoreSink
from lookout.sources.base import InputChanged, Source

log = logging.getLogger("lookout.run")
CHECKPOINT = "checkpoint.pkl"


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
    on_reset: str = "fail"  # Kafka input not the log the checkpoint was taken from: fail | earliest
    idle_timeout: float = 30.0  # seconds
    es_url: str | None = None
    view: bool = False
    commit_interval: float = 1.0
    stop_timeout: float = 30.0  # s after a stop signal before a flush stuck on an unreachable server is abandoned

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
                           lateness=rs.lateness if rs is not None else 10_000_000, on_reset=opts.on_reset)
    from lookout.sources.generator_source import GeneratorSource

    return GeneratorSource(opts.rate, opts.seed)


def make_sinks(rs: RuleSet, opts: RunOptions, files: FileSink) -> SinkSet:
    sinks: list[Sink] = [files, StoreSink(opts.state_dir / "store")]
    if opts.kafka:
        from lookout.sinks.kafka import KafkaSink

        sinks.append(KafkaSink(opts.kafka, dlq_topic=f"{opts.topic}-dlq", rules=rs,
                               config=opts.kafka_properties(), partitions=opts.partitions))
    if opts.es_url:
        from lookout.sinks.elasticsearch import ElasticsearchSink

        sinks.append(ElasticsearchSink.from_url(opts.es_url, rules=rs, on_rejected=files.write_rejected))
    return SinkSet(sinks)


class Checkpointer:
    """One file, replaced atomically: engine state + source position + output sizes."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CHECKPOINT
        state_dir.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, Any] | None:
        try:
            return pickle.loads(self.path.read_bytes())  # noqa: S301 - our own file
        except FileNotFoundError:
            return None

    def save(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(pickle.dumps(state, protocol=5))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


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
        state = self.ckpt.load()
        if state is None:
            self.source.restore(None)
            return
        try:
            self.pipeline.engine.restore(state["engine"])
        except ValueError as e:
            raise SystemExit(f"error: {e} ({self.ckpt.path})") from None
        self.files.truncate_to(state["files"])
        self.store.writer.drop_after(state["store_seq"])
        st = self.pipeline.stats
        for k, v in state.get("stats", {}).items():
            setattr(st, k, v)
        self.position = state["position"]
        self.source.restore(self.position)
        log.info("resumed from checkpoint at %s", self.position)

    def _commit(self) -> None:
        self.sinks.flush()
        st = self.pipeline.stats
        self.ckpt.save({
            "engine": self.pipeline.engine.snapshot(),
            "position": self.position,
            "files": self.files.sizes(),
            "store_seq": self.store.writer.seq,
            "stats": {"lines": st.lines, "records": st.records, "rejected": st.rejected, "late": st.late,
                      "reasons": st.reasons, "results": st.results},
        })
        self.source.commit(self.position)

    def _take_unterminated(self) -> None:
        """Input idle or stopping: a last line without its newline is read as whole (as replay does)."""
        chunk = self.source.read_unterminated()
        if chunk is None:
            return
        report = self.pipeline.step(chunk)
        self.position = chunk.position
        if self.view:
            self.view.update(report.results)

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
        # one signal must be enough: a flush still stuck after stop_timeout is abandoned as by a second
        timer = threading.Timer(self.opts.stop_timeout, self._stop_overdue)
        timer.daemon = True
        timer.start()

    def _stop_overdue(self) -> None:
        if self.sinks_aborted:
            return
        log.warning("still not stopped %.0f s after the stop signal (a flush waits on an unreachable server): "
                    "abandoning it; nothing unacknowledged was committed, it is read again on restart",
                    self.opts.stop_timeout)
        self.sinks_aborted = True
        self.sinks.abort()

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
        changed: InputChanged | None = None
        try:
            if self.view:
                self.view.start()
            while not self.stop_requested:
                if self.opts.duration is not None and time.monotonic() - started >= self.opts.duration:
                    break
                try:
                    chunk = self.source.poll(0.2)
                except InputChanged as e:  # stop cleanly: what was processed is committed below
                    changed = e
                    break
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
                    self._take_unterminated()
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
            self._take_unterminated()
        finally:
            if self.view:
                self.view.stop()
        self._commit()
        self.source.close()
        self.sinks.close()
        st = self.pipeline.stats
        st.delivery = self.sinks.delivery()
        if not self.opts.view:
            from lookout.live import print_run_summary

            print_run_summary(st, str(self.opts.out_dir))
        for name in st.refused_everything():
            log.error("%s refused every document it was sent (%d); they are dead letters in %s/rejected.jsonl",
                      name, st.delivery[name][1], self.opts.out_dir)
        if changed is not None:
            raise changed
        return 1 if st.refused_everything() else 0


def run_pipeline(rs: RuleSet, opts: RunOptions) -> int:
    setup_logging(logging.INFO)
    faulthandler.enable()  # a crash in a native library (librdkafka) still leaves what lookout was doing
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
