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
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from lookout.errors import InputChanged, StateError
from lookout.kafka.config import KafkaConnection, parse_properties
from lookout.pipeline import Pipeline, StepReport
from lookout.rules import RuleSet, parse_duration
from lookout.safe_text import setup_logging
from lookout.sinks.base import Sink, SinkSet
from lookout.sinks.files import FileSink
from lookout.sinks.store import StoreSink
from lookout.sources.base import Source
from lookout.statelock import StateDirBusy, StateDirLock

if TYPE_CHECKING:
    from lookout.dashboard.feed import DashboardFeed

log = logging.getLogger("lookout.run")
CHECKPOINT = "checkpoint.pkl"


class RunOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # inputs may hold secrets (--kafka-config)

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
    http: str | None = "127.0.0.1:8080"  # metrics and health; "off" disables
    http_token: str | None = None  # required for a non-loopback --http

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

    @field_validator("kafka_config")
    @classmethod
    def _kafka_config(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        parse_properties(v)  # a malformed --kafka-config is an option error, reported before anything starts
        return v

    @cached_property
    def kafka_connection(self) -> KafkaConnection:
        """The one connection the Kafka source and sink share (and with it, one broker-health report)."""
        if not self.kafka:
            raise ValueError("no --kafka bootstrap servers given")
        return KafkaConnection.from_options(self.kafka, self.kafka_config)

    @model_validator(mode="after")
    def _http(self) -> "RunOptions":
        from lookout.http.bind import check_token, parse_bind

        check_token(parse_bind(self.http), self.http_token)
        return self

    def source_kind(self) -> str:
        """The `source` label of lookout_records_total: a kind, never a path or a host."""
        return "tail" if self.tail_path is not None else "kafka" if self.kafka else "generator"


def make_source(opts: RunOptions, rs: RuleSet | None = None) -> Source:
    if opts.tail_path is not None:
        from lookout.sources.tail import TailSource

        return TailSource(opts.tail_path, state_dir=opts.state_dir, log_format=opts.log_format,
                          host=opts.log_host, geoip=opts.geoip)
    if opts.kafka:
        from lookout.sources.kafka import KafkaSource

        return KafkaSource(opts.kafka_connection, opts.topic, partitions=opts.partitions,
                           lateness=rs.lateness if rs is not None else 10_000_000, on_reset=opts.on_reset)
    from lookout.sources.generator_source import GeneratorSource

    return GeneratorSource(opts.rate, opts.seed)


def make_sinks(rs: RuleSet, opts: RunOptions, files: FileSink) -> SinkSet:
    sinks: list[Sink] = [files, StoreSink(opts.state_dir / "store")]
    if opts.kafka:
        from lookout.sinks.kafka import KafkaSink

        sinks.append(KafkaSink(opts.kafka_connection, dlq_topic=f"{opts.topic}-dlq", rules=rs,
                               partitions=opts.partitions))
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
        self.view = None
        self.notifier = None
        self.metrics = None
        self.health = None
        self.http = None
        self.notify_ckpt = 0  # number of the last checkpoint; outbox rows are staged under it
        if rs.notify:
            from lookout.notify.sender import Notifier

            self.notifier = Notifier(rs, opts.state_dir)
        self.feed: DashboardFeed | None = None  # the web dashboard's live feed, when one is served

    def _restore(self) -> None:
        state = self.ckpt.load()
        self.notify_ckpt = int(state.get("notify_ckpt", 0)) if state else 0
        if self.notifier is not None:
            self.notifier.recover(self.notify_ckpt)
        if state is None:
            self.source.restore(None)
            return
        try:
            self.pipeline.engine.restore(state["engine"])
        except ValueError as e:
            raise StateError(f"{e} ({self.ckpt.path})") from None
        # checkpoints written before sinks kept their own state had these two keys instead
        old = {k: v for k, v in (("files", state.get("files")), ("store", state.get("store_seq"))) if v is not None}
        self.sinks.restore(state["sinks"] if "sinks" in state else old)
        st = self.pipeline.stats
        for k, v in state.get("stats", {}).items():
            setattr(st, k, v)
        if state.get("incidents") is not None:
            self.pipeline.incidents.restore(state["incidents"])
        self.position = state["position"]
        self.source.restore(self.position)
        log.info("resumed from checkpoint at %s", self.position)

    def _start_http(self) -> None:
        """Metrics and health on --http (bound now: a busy port is an error at start)."""
        from lookout.http.bind import parse_bind

        bind = parse_bind(self.opts.http)
        if bind is None:
            return
        from lookout.http import HttpServer, create_app
        from lookout.http.metrics import Health, RunMetrics

        self.metrics = RunMetrics(self.opts.source_kind(), self.pipeline, self.notifier)
        self.health = Health(self.opts.commit_interval)
        self._publish()
        from lookout.dashboard.live import live_routes

        self.http = HttpServer(create_app(self.metrics.registry, self.health.check, self.opts.http_token,
                                          routes=live_routes(self)), *bind)
        self.http.start()

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.publish(self.pipeline, self.sinks.errors(), self.source.lag())

    def _commit(self) -> None:
        t0 = time.perf_counter()
        self._commit_now()
        if self.metrics is not None and self.health is not None:
            self.metrics.checkpoint_seconds.observe(time.perf_counter() - t0)
            self.health.committed()
            self._publish()

    def _commit_now(self) -> None:
        self.sinks.flush()
        st = self.pipeline.stats
        n = self.notify_ckpt + 1
        if self.notifier is not None:  # durable before the checkpoint, sendable after it
            self.notifier.stage(n)
        self.ckpt.save({
            "notify_ckpt": n,
            "engine": self.pipeline.engine.snapshot(),
            "incidents": self.pipeline.incidents.snapshot(),  # JSON bytes, its own blob
            "position": self.position,
            "sinks": self.sinks.checkpoint(),
            "stats": {"lines": st.lines, "records": st.records, "rejected": st.rejected, "late": st.late,
                      "reasons": st.reasons, "results": st.results, "incidents": st.incidents},
        })
        self.notify_ckpt = n
        if self.notifier is not None:
            self.notifier.release(n)
        self.source.commit(self.position)
        if self.feed is not None:
            self.feed.committed()

    def _take_unterminated(self) -> StepReport | None:
        """Input idle or stopping: a last line without its newline is read as whole (as replay does)."""
        chunk = self.source.read_unterminated()
        if chunk is None:
            return None
        report = self.pipeline.step(chunk)
        self.position = chunk.position
        return report

    def _deliver(self, reports: list[StepReport]) -> None:
        """A step's results and incidents to the notifier, the live view and the dashboard feed."""
        for rep in reports:
            if self.notifier is not None:
                self.notifier.add(rep.incidents)
            if self.view and (rep.results or rep.incidents):
                self.view.update(rep.results, rep.incidents)
            if self.feed is not None:
                self.feed.step(rep.results, rep.records, self.pipeline, [t.doc for t in rep.incidents])

    def _advance_idle(self, quiet: float) -> tuple[list[StepReport], bool]:
        """No record this poll: let the watermark move without data (re-evaluated every poll).
        First what the source vouches for (Kafka partitions at their end and quiet), then, once
        input has been quiet for the idle timeout, the wall clock: now - lateness. Windows ending
        after that stay open, so records of the present are never late after a quiet spell;
        a backlog far behind the clock still has every window closed. Returns (reports, moved)."""
        engine = self.pipeline.engine
        before = engine.watermark
        reports = []
        wm = self.source.idle_watermark()
        if wm is not None and wm > before:
            reports.append(self.pipeline.advance(wm))
        # (open windows first: caught_up() may ask the broker, and with nothing open there is
        # nothing for the clock to close)
        if quiet >= self.opts.idle_timeout and engine.open_window_end() is not None and self.source.caught_up():
            reports.append(self.pipeline.idle_advance())
        return reports, engine.watermark != before

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
        self._start_http()
        if self.opts.view:
            from lookout.live import LiveView

            self.view = LiveView(self.rs, self.pipeline, self.source.name)
        started = time.monotonic()
        last_commit = time.monotonic()
        last_data = time.monotonic()
        # False at start: windows restored from a checkpoint are open too and close on quiet input
        # like any others (a restart after everything was read); the log says so.
        idle_said = False
        dirty = False
        unterminated_taken = False  # once per quiet spell: a line without its newline is taken as whole
        changed: InputChanged | None = None
        if self.notifier is not None:
            self.notifier.start()
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
                reports: list[StepReport] = []
                got_records = False
                if chunk is not None:
                    report = self.pipeline.step(chunk)
                    reports.append(report)
                    self.position = chunk.position
                    dirty = True
                    if report.records is not None and report.records.height:
                        got_records = True
                        last_data = now
                        idle_said = False
                        unterminated_taken = False
                if not got_records:  # nothing arrived (the generator hands out empty chunks)
                    if not unterminated_taken and now - last_data >= self.opts.idle_timeout:
                        # quiet: a last line still without its newline will not get one; it is read
                        # before the clock closes the window it belongs to
                        unterminated_taken = True
                        last = self._take_unterminated()
                        if last is not None:
                            reports.append(last)
                            dirty = True
                    idle, moved = self._advance_idle(now - last_data)
                    reports += idle
                    dirty = dirty or moved
                    if moved and not idle_said and now - last_data >= self.opts.idle_timeout:
                        idle_said = True
                        log.info("input idle for %.0fs: the watermark follows the clock (now - lateness); "
                                 "windows close as the clock passes their end", self.opts.idle_timeout)
                self._deliver(reports)
                if self.view:
                    self.view.refresh()
                if self.health is not None:
                    self.health.beat(dirty)
                    if dirty:  # something happened since the last commit (a step, an idle close)
                        self._publish()
                if dirty and now - last_commit >= self.opts.commit_interval:
                    self._commit()
                    last_commit = now
                    dirty = False
            last = self._take_unterminated()  # stopping: nothing more will complete it
            if last is not None:
                self._deliver([last])
        finally:
            if self.view:
                self.view.stop()
        self._commit()
        self.source.close()
        self.sinks.close()
        if self.notifier is not None:
            self.notifier.stop(drain=5.0)
        if self.http is not None:
            self.http.stop()
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
    if not source.acquire(lambda: stop["requested"]):
        source.close()
        return 0
    try:  # a standby taking over may find the old holder still exiting: it waits a little
        lock = StateDirLock(opts.state_dir, wait=30.0 if source.stands_by else 0.0)
    except StateDirBusy:
        source.close()
        raise
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
    finally:
        lock.release()
