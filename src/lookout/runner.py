"""`lookout run`: the long-running loop that owns delivery.

poll source → pipeline step → (every commit interval) flush sinks → checkpoint engine state and
source position atomically → commit the source. After a crash the next start restores the
checkpoint, cuts result files back to their checkpointed sizes and drops store files written
after it, then reads on from the checkpointed position: nothing lost, nothing counted twice.
SIGINT/SIGTERM end the loop at the next step with a final flush and checkpoint (exit 0), within
`--stop-timeout` whatever a sink or the broker does (lookout.stopping): a flush still waiting then
is abandoned, the last checkpoint stands, and what came after it is re-read on restart.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from lookout.ahead import ParseAhead
from lookout.checkpoint import Checkpointer
from lookout.errors import DeliveryError, InputChanged
from lookout.factory import GeneratorInput, Input, KafkaInput, SinkPlan, TailInput, build_sinks
from lookout.kafka.config import KafkaConnection, parse_properties
from lookout.loop import DeliveryLoop, StopRequest
from lookout.parsepool import default_parse_workers
from lookout.pipeline import Pipeline, StepReport
from lookout.rules import RuleSet, parse_duration
from lookout.safe_text import setup_logging
from lookout.sources.base import Source
from lookout.statelock import StateDirBusy, StateDirLock

if TYPE_CHECKING:
    from lookout.dashboard.feed import DashboardFeed
    from lookout.kafka.checkpoint_topic import Replica
from lookout.stopping import DEFAULT_STOP_TIMEOUT, REREAD, StopDeadline

log = logging.getLogger("lookout.run")


class RunOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # inputs may hold secrets (--kafka-config)

    out_dir: Path = Path("lookout-out")
    state_dir: Path = Path(".lookout-state")
    rate: float = 100.0
    seed: int | None = None
    duration: float | None = None
    tail_path: Path | None = None
    rotate_wait: float = 300.0  # seconds a rotated log is still read after its last growth
    backfill: bool = False  # --tail: read the rotated files beside the log first (oldest first, .gz too)
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
    http: str | None = "127.0.0.1:8080"  # metrics and health; "off" disables
    http_token: str | None = None  # required for a non-loopback --http
    retention: float | None = 7 * 86400.0  # seconds of event time the store keeps; None: all
    parse_workers: int | None = None  # parse processes beside the engine (None: one per core, none on one core)
    checkpoint_topic: str | None = "lookout-checkpoints"  # --kafka: replica of the checkpoint for a standby; None: off

    @field_validator("checkpoint_topic", mode="before")
    @classmethod
    def _checkpoint_topic(cls, v: Any) -> str | None:
        return None if v is None or (isinstance(v, str) and v.strip().lower() in ("off", "")) else str(v)

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, v: Any) -> float | None:
        if v is None or (isinstance(v, str) and v.strip().lower() in ("off", "none", "0")):
            return None
        secs = parse_duration(v) / 1e6 if isinstance(v, str) else float(v)
        if secs <= 0:
            raise ValueError("--retention must be a positive duration (e.g. 7d) or `off`")
        return secs

    stop_timeout: float = DEFAULT_STOP_TIMEOUT  # seconds from SIGTERM to exit, whatever sinks do

    @field_validator("idle_timeout", "stop_timeout", "rotate_wait", mode="before")
    @classmethod
    def _durations(cls, v: Any) -> float:
        """A duration (`30s`, `5m`) or a plain number of seconds (`3`, as the options said before)."""
        if isinstance(v, str):
            plain = v.strip()
            if plain.isascii() and plain.replace(".", "", 1).isdigit():
                return float(plain)
            return parse_duration(v) / 1e6
        return float(v)

    @field_validator("stop_timeout")
    @classmethod
    def _stop_timeout(cls, v: float) -> float:
        if v < 0:
            raise ValueError("--stop-timeout must not be negative")
        return v

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
    def _http(self) -> RunOptions:
        from lookout.http.bind import check_token, parse_bind

        check_token(parse_bind(self.http), self.http_token)
        return self

    def input(self) -> Input:
        """The one source these options name, with only its own options: --tail, else --kafka,
        else the generator."""
        if self.tail_path is not None:
            return TailInput(
                self.tail_path,
                self.state_dir,
                log_format=self.log_format,
                host=self.log_host,
                geoip=self.geoip,
                rotate_wait=self.rotate_wait,
                backfill=self.backfill,
            )
        if self.kafka:
            return KafkaInput(self.kafka_connection, self.topic, partitions=self.partitions, on_reset=self.on_reset)
        return GeneratorInput(self.rate, self.seed)

    def sink_plan(self) -> SinkPlan:
        """A run's outputs: files appended and fsynced (cut back on restore), the embedded store in
        the state dir, and Kafka and Elasticsearch when named."""
        return SinkPlan(
            self.out_dir,
            append=True,
            fsync=True,
            store_dir=self.state_dir / "store",
            retention_us=None if self.retention is None else int(self.retention * 1e6),
            kafka=self.kafka_connection if self.kafka else None,
            dlq_topic=f"{self.topic}-dlq",
            partitions=self.partitions,
            es_url=self.es_url,
        )

    def source_kind(self) -> str:
        """The `source` label of lookout_records_total: a kind, never a path or a host."""
        return self.input().kind


@dataclass
class _Quiet:
    """How long the input has been quiet, and what was done about it in this quiet spell."""

    last_data: float  # monotonic time of the last step with records
    idle_said: bool = False  # the log said the watermark follows the clock
    unterminated_taken: bool = False  # a last line without its newline was taken as whole


def make_replica(opts: RunOptions) -> Replica | None:
    """--kafka: the checkpoint is also written to a compacted topic, for a standby without shared disk."""
    if not opts.kafka or not opts.checkpoint_topic:
        return None
    from lookout.kafka.checkpoint_topic import CheckpointTopic, Replica, deployment_group

    conn = opts.kafka_connection
    return Replica(CheckpointTopic(conn, deployment_group(conn, opts.topic), opts.checkpoint_topic))


class Runner:
    def __init__(self, rs: RuleSet, opts: RunOptions, source: Source | None = None, deadline: StopDeadline | None = None) -> None:
        self.rs = rs
        self.opts = opts
        opts.state_dir.mkdir(parents=True, exist_ok=True)
        self.sinks = build_sinks(rs, opts.sink_plan())
        self.pipeline = Pipeline(rs, self.sinks, dedup=True)
        self.source = source or opts.input().open(rs)
        self.ckpt = Checkpointer(opts.state_dir)
        self.position: Any = None
        self.position_committed: Any = None  # the position of the last checkpoint
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
        self.deadline = deadline or StopDeadline(opts.stop_timeout)
        self.deadline.also_abandon(self.sinks.abort)
        self.stop = StopRequest(first=self._stopping, again=self.deadline.now)
        self.loop = DeliveryLoop(opts.commit_interval, opts.duration, stopped=lambda: self.stop.requested)
        self.changed: InputChanged | None = None  # the input is not the checkpoint's: raised once committed
        self.seq = 0  # commits so far, carried on by an instance that takes over (newest checkpoint wins)
        self.replica = make_replica(opts)
        if self.replica is not None:
            self.deadline.also_abandon(self.replica.abort)

    @property
    def stop_requested(self) -> bool:
        return self.stop.requested

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        self.stop.requested = value

    def _restore(self) -> None:
        """Engine, outputs and position back to the last whole commit (CheckpointError when the
        checkpoint cannot be used: it is never guessed around)."""
        if self.replica is None:
            state = self.ckpt.load(self.pipeline.engine)
        else:  # the newer of the state dir's and the topic's (lookout.kafka.checkpoint_topic)
            state = self.replica.restore(self.ckpt, self.pipeline.engine, self.sinks.checkpoint())
        self.seq = int(state.get("seq", 0)) if state else 0
        self.notify_ckpt = int(state.get("notify_ckpt", 0)) if state else 0
        if self.notifier is not None:
            self.notifier.recover(self.notify_ckpt)
            if state and state.get("adopt_outbox"):  # restored from the checkpoint topic: the dead instance's
                self.notifier.adopt(state["adopt_outbox"], self.notify_ckpt)
        if state is None:
            self.source.restore(None)
            self.position = self.position_committed = self.source.start_position()
            # A first checkpoint before anything is read: where the outputs stood. Without it a
            # stop before the first regular commit (the broker lost while the first flush waits)
            # left results in the appended files and the store that a restart, reading from the
            # beginning, wrote a second time after them.
            self._commit_now()
            return
        self.sinks.restore(state["sinks"])
        if self.pipeline.dedup is not None and "dedup" in self.ckpt.tables:
            self.pipeline.dedup.load_table(self.ckpt.tables["dedup"])
        st = self.pipeline.stats
        for k, v in state.get("stats", {}).items():
            setattr(st, k, Counter(v) if k in ("reasons", "results") else v)
        if state.get("incidents") is not None:
            self.pipeline.incidents.restore(orjson.dumps(state["incidents"]))
        self.position = self.position_committed = state["position"]
        self.source.restore(self.position)
        log.info("resumed from checkpoint at %s", self.position if self.position is not None else "the start (nothing read yet)")

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

        self.http = HttpServer(
            create_app(self.metrics.registry, self.health.check, self.opts.http_token, routes=live_routes(self)), *bind
        )
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
        t0 = time.perf_counter()
        self.sinks.flush()
        t1 = time.perf_counter()
        st = self.pipeline.stats
        n = self.notify_ckpt + 1
        if self.notifier is not None:  # durable before the checkpoint, sendable after it
            self.notifier.stage(n)
        info = self.ckpt.save(
            {
                "seq": self.seq + 1,
                "at": time.time(),
                "notify_ckpt": n,
                # for a standby without this state dir: what is not yet delivered (at least once)
                **({"outbox": self.notifier.undelivered()} if self.notifier is not None and self.replica is not None else {}),
                "incidents": orjson.loads(self.pipeline.incidents.snapshot()),  # open incidents: JSON data
                "position": self.position,
                "sinks": self.sinks.checkpoint(),
                "stats": {
                    "lines": st.lines,
                    "records": st.records,
                    "rejected": st.rejected,
                    "late": st.late,
                    "duplicates": st.duplicates,
                    "reasons": dict(st.reasons),
                    "results": dict(st.results),
                    "incidents": st.incidents,
                },
            },
            self.pipeline.engine,
            journals={"dedup": self.pipeline.dedup} if self.pipeline.dedup is not None else None,
        )
        self.seq += 1
        if self.replica is not None:
            self.replica.publish(info, self.ckpt)
        t2 = time.perf_counter()
        self.notify_ckpt = n
        if self.notifier is not None:
            self.notifier.release(n)
        self.source.commit(self.position)
        self.position_committed = self.position
        # Sink upkeep once the checkpoint is durable (the store: one bounded merge, retention).
        self.sinks.committed()
        t3 = time.perf_counter()
        log.debug(
            "commit: flush %.1f ms, checkpoint %.1f ms (%s, %d bytes), upkeep %.1f ms",
            (t1 - t0) * 1e3,
            (t2 - t1) * 1e3,
            info.kind,
            info.nbytes,
            (t3 - t2) * 1e3,
        )
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
        """First signal: stop after this step, flush, checkpoint, exit 0, all within
        --stop-timeout (lookout.stopping). A second one abandons a stuck flush at once."""
        self.stop()

    def _stopping(self) -> None:
        self.deadline.start()
        log.info(
            "stopping: flushing and checkpointing (at most %.0fs; signal again to abandon a stuck flush)", self.opts.stop_timeout
        )

    def _final_commit(self) -> bool:
        """The last flush + checkpoint. False: abandoned at the stop deadline, nothing committed."""
        if self.deadline.abandoned:
            return False
        try:
            self._commit()
        except DeliveryError:
            if not self.deadline.abandoned:
                raise
            return False
        return True

    def _step(self) -> bool:
        """One poll: a chunk through the pipeline, or, on quiet input, a last unterminated line
        and the idle watermark. True when anything changed that a commit should cover."""
        try:
            got = self.ahead.poll(0.2)
        except InputChanged as e:  # stop cleanly: what was processed is committed at the end
            self.changed = e
            self.loop.end()
            return False
        now = time.monotonic()
        q = self.quiet
        reports: list[StepReport] = []
        dirty = got_records = False
        if got is not None:
            chunk, parsed = got
            report = self.pipeline.step(chunk, parsed)
            reports.append(report)
            self.position = chunk.position
            dirty = True
            if report.records is not None and report.records.height:
                got_records = True
                q.last_data = now
                q.idle_said = False
                q.unterminated_taken = False
        if not got_records:  # nothing arrived (the generator hands out empty chunks)
            if not q.unterminated_taken and now - q.last_data >= self.opts.idle_timeout:
                # quiet: a last line still without its newline will not get one; it is read
                # before the clock closes the window it belongs to
                q.unterminated_taken = True
                last = self._take_unterminated()
                if last is not None:
                    reports.append(last)
                    dirty = True
            quiet = now - max(q.last_data, self.source.readable_since())
            idle, moved = self._advance_idle(quiet)
            reports += idle
            dirty = dirty or moved
            if moved and not q.idle_said and quiet >= self.opts.idle_timeout:
                q.idle_said = True
                log.info(
                    "input idle for %.0fs: the watermark follows the clock (now - lateness); "
                    "windows close as the clock passes their end",
                    self.opts.idle_timeout,
                )
        self._deliver(reports)
        if self.view:
            self.view.refresh()
        return dirty

    def _beat(self, dirty: bool) -> None:
        """Liveness for /healthz after every step; metrics when something changed since the last commit."""
        if self.health is not None:
            self.health.beat(dirty)
            if dirty:
                self._publish()

    def run(self) -> int:
        self._restore()
        self._start_http()
        if self.opts.view:
            from lookout.live import LiveView

            self.view = LiveView(self.rs, self.pipeline, self.source.name)
        # idle_said False at start: windows restored from a checkpoint are open too and close on
        # quiet input like any others (a restart after everything was read); the log says so.
        self.quiet = _Quiet(last_data=time.monotonic())
        if self.notifier is not None:
            self.notifier.start()
        # Chunks polled ahead are parsed while the engine works; a chunk polled but not yet
        # stepped is never committed (the position is that of the last chunk stepped).
        workers = default_parse_workers() if self.opts.parse_workers is None else self.opts.parse_workers
        self.ahead = ParseAhead(self.source, workers=workers)
        try:
            if self.view:
                self.view.start()
            self.loop.run(self._step, self._commit, self._beat)
            last = self._take_unterminated()  # stopping: nothing more will complete it
            if last is not None:
                self._deliver([last])
        except DeliveryError:
            if not self.deadline.abandoned:  # a sink failed for good: stop without committing
                self.ahead.close()
                raise
        except BaseException:
            self.ahead.close()
            raise
        finally:
            if self.view:
                self.view.stop()
        try:
            return self._finish()
        finally:
            # last: what was parsed ahead is dropped anyway, and on a loaded machine the parse
            # workers take seconds to end, which would hold up the last commit of a bounded stop
            self.ahead.close()

    def _finish(self) -> int:
        """After the loop: the last commit, the summary, the source's close; the exit code."""
        committed = self._final_commit()
        self.ckpt.close()
        if self.replica is not None:  # (what it has not sent by then, a standby finds the commit before)
            self.replica.close(self.deadline.left(2.0))
        if self.notifier is not None:
            self.notifier.stop(drain=0.0 if self.deadline.abandoned else 5.0)
        if self.http is not None:
            self.http.stop()
        if not committed:
            log.warning(
                "stopped at the stop timeout without the last checkpoint: input after %s was not all acknowledged downstream; %s",
                self.position_committed,
                REREAD,
            )
            self._summary()  # (before the source's close, which an unreachable broker may hold up)
            self.source.close()  # leave the lock group, so a standby takes over at once
            if self.changed is not None:
                raise self.changed
            return 0
        try:
            self.sinks.close()  # (ES: a refresh, which a frozen server would hold up)
        except DeliveryError:
            if not self.deadline.abandoned:
                raise
        refused = self._summary()
        self.source.close()  # last: with the broker gone, the consumer's close may block until the deadline
        if self.changed is not None:
            raise self.changed
        return 1 if refused else 0

    def _summary(self) -> list[str]:
        """Print the run's summary; the sinks that refused every document they were sent."""
        st = self.pipeline.stats
        st.delivery = self.sinks.delivery()
        if not self.opts.view:
            from lookout.live import print_run_summary

            print_run_summary(st, str(self.opts.out_dir))
        refused = st.refused_everything()
        for name in refused:
            log.error(
                "%s refused every document it was sent (%d); they are dead letters in %s/rejected.jsonl",
                name,
                st.delivery[name][1],
                self.opts.out_dir,
            )
        return refused


def run_pipeline(rs: RuleSet, opts: RunOptions, exit_now: Callable[[int], None] | None = None) -> int:
    """Run until a signal (or --duration). `exit_now`, from the command line, ends the process at
    the stop deadline if something still blocks then (lookout.stopping)."""
    level = getattr(logging, os.environ.get("LOOKOUT_LOG_LEVEL", "INFO").upper(), logging.INFO)  # DEBUG: commit costs
    setup_logging(level)
    faulthandler.enable()  # a crash in a native library (librdkafka) still leaves what lookout was doing
    # bounded from the first signal on, also while set-up waits on an unreachable broker or server
    deadline = StopDeadline(opts.stop_timeout, exit_now=exit_now)
    early = StopRequest(first=deadline.start)
    early.install()
    source = opts.input().open(rs)
    # A source with exclusive input (Kafka) may have to stand by until another instance stops.
    # Nothing in the state dir is touched before that: a standby may share it with the active one.
    if not source.acquire(lambda: early.requested):
        source.close()
        return 0
    try:  # a standby taking over may find the old holder still exiting: it waits a little
        lock = StateDirLock(opts.state_dir, wait=30.0 if source.stands_by else 0.0)
    except StateDirBusy:
        source.close()
        raise
    try:
        runner = Runner(rs, opts, source=source, deadline=deadline)
        runner.stop_requested = early.requested
        runner.stop.install()
        code = runner.run()
        if runner.deadline.abandoned and exit_now is not None:
            lock.release()
            exit_now(code)  # a sink's worker may still be blocked on a frozen server: do not join it
        return code
    finally:
        lock.release()
