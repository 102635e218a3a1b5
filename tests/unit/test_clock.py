"""Event time against a (simulated) wall clock: idle input moves the watermark with the clock and
never past it (issue 16), records from the future are rejected and move nothing (issue 18).

The pipeline (which every source goes through) runs with an injected clock and is compared with
the brute-force reference (tests/reference.py, `Clock` items), on random streams whose event
time follows the clock, with idle spells, disorder within and beyond the lateness, and records
stamped ahead of the clock within and beyond max_future.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookout.engine import Engine
from lookout.output import ResultBatch
from lookout.pipeline import Pipeline
from lookout.records import parse_chunk
from lookout.rules import RulesError, RuleSet, load_rules, load_rules_text
from lookout.sinks.base import Sink
from lookout.sources.base import Chunk
from tests.reference import Clock, reference
from tests.unit.engine.test_core import BASE, assert_same, make_lines, record_strategy

S = 1_000_000  # µs per second

RULES = load_rules_text("""
lateness: 3s
max_future: 5s
rules:
  - {name: hop-count, window: {size: 5s, hop: 2s}, group_by: client_ip, aggregate: count, threshold: count > 3}
  - {name: hop-final, window: {size: 4s, hop: 1s}, filter: {status: [4xx, 500-503]}, group_by: host, aggregate: count,
     emit: final}
  - {name: minute, window: 1 minute, group_by: host, aggregate: avg(request_time)}
  - {name: max-alert, window: 5s, group_by: client_ip, aggregate: max(request_time), threshold: max(request_time) > 0.8}
  - {name: upd, window: {size: 4s, hop: 2s}, group_by: host, aggregate: count, emit: update}
""")


class MemorySink(Sink):
    """Keeps what the pipeline writes, for comparison."""

    def __init__(self) -> None:
        self.results: list[ResultBatch] = []
        self.rejected: list[dict] = []

    def write_results(self, batch: ResultBatch) -> None:
        self.results.append(batch)

    def write_rejected(self, entries: list[bytes]) -> None:
        self.rejected += [orjson.loads(e) for e in entries]

    def rows(self, rs: RuleSet) -> dict[str, list]:
        out: dict[str, list] = {r.name: [] for r in rs.rules}
        for rb in self.results:
            nk = len(rb.rule.group_by)
            for row in rb.frame.iter_rows():
                out[rb.rule.name].append((row[0], row[1], tuple(row[2 : 2 + nk]), row[-1]))
        return out

    def reasons(self) -> list[str]:
        return [d["reason"] for d in self.rejected]


class SimClock:
    def __init__(self, now_us: int) -> None:
        self.now = now_us

    def __call__(self) -> float:
        return self.now / S


def run_pipeline(items: list, rs: RuleSet, cuts: Sequence[int] = (), end_of_input: bool = True) -> tuple[Pipeline, MemorySink]:
    """Feed `items` (lines and reference `Clock`s) through a Pipeline on a simulated clock: lines
    between two clocks are read at the first one's time, cut into chunks at `cuts`."""
    first = next(i for i in items if isinstance(i, Clock))
    clock = SimClock(first.now)
    sink = MemorySink()
    pipe = Pipeline(rs, sink, clock=clock)
    pending: list[bytes] = []
    seq = 0

    def flush() -> None:
        nonlocal seq
        if not pending:
            return
        bounds = sorted({0, len(pending), *[c % (len(pending) + 1) for c in cuts]})
        for a, b in pairwise(bounds):
            pipe.step(Chunk(source="sim", data=b"\n".join(pending[a:b]) + b"\n", first_line=seq + a))
        seq += len(pending)
        pending.clear()

    for item in items:
        if isinstance(item, Clock):
            flush()
            clock.now = item.now
            if item.idle:
                pipe.idle_advance()
        else:
            pending.append(item)
    flush()
    if end_of_input:
        pipe.close_windows()
    return pipe, sink


# ------------------------------------------------------------------- random clocked streams

segment = st.one_of(
    st.fixed_dictionaries(
        {
            "kind": st.just("read"),
            "advance": st.floats(0, 3),
            "records": st.lists(
                st.tuples(
                    # offset from the clock: mostly behind it, within and beyond the lateness (3 s), now and
                    # then far behind (a backlog after a quiet spell); sometimes ahead, within max_future
                    # (5 s) and beyond it
                    st.one_of(st.floats(-5.0, 0.0), st.floats(-5.0, 0.0), st.floats(-60.0, 0.0), st.floats(0.0, 12.0)),
                    record_strategy(3.0),
                ),
                min_size=1,
                max_size=8,
            ),
        }
    ),
    st.fixed_dictionaries({"kind": st.just("idle"), "gap": st.floats(0, 70)}),
)


def clocked_items(segments: list[dict]) -> tuple[list, list[tuple[int, int, bool]]]:
    """(items for reference and pipeline, (event time, clock at arrival, valid) per record line)."""
    now = BASE * S
    items: list = [Clock(now)]
    arrivals: list[tuple[int, int, bool]] = []
    for seg in segments:
        if seg["kind"] == "idle":
            now += round(seg["gap"] * S)
            items.append(Clock(now, idle=True))
            continue
        now += round(seg["advance"] * S)
        items.append(Clock(now))
        for offset, spec in seg["records"]:
            spec = dict(spec, step=0.0, back=0.0, iso=False, bad=max(spec["bad"], 1))
            ts = round(now / S + offset, 3)
            (line,) = make_lines([spec])
            rec = orjson.loads(line)
            rec["@timestamp"] = ts
            rec["seq"] = len(arrivals)  # ignored by the contract; finds the record in dead letters
            items.append(orjson.dumps(rec))
            arrivals.append((round(ts * S), now, spec["bad"] != 1))  # bad == 1: status 700, rejected
    return items, arrivals


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(segment, min_size=1, max_size=40), st.lists(st.integers(0, 20), max_size=3))
def test_clocked_streams_match_reference_and_the_present_is_never_late(segments, cuts):
    items, arrivals = clocked_items(segments)
    want, w_rej, w_late = reference(items, RULES)
    pipe, sink = run_pipeline(items, RULES, cuts)
    st_ = pipe.stats
    assert (st_.rejected, st_.late) == (w_rej, w_late)
    assert_same(RULES, sink.rows(RULES), want)
    # Issue 16's property: a record stamped within `lateness` of the clock when it arrives (and
    # not ahead of it) is never late, however long the input was idle before.
    for d in sink.rejected:
        if d["reason"] == "late":
            ts, now, _ = arrivals[orjson.loads(d["raw"])["seq"]]
            assert ts < now - RULES.lateness, d
    # Issue 18's: exactly the records beyond max_future are rejected for it
    future = sum(1 for ts, now, valid in arrivals if valid and ts > now + RULES.max_future)
    assert sink.reasons().count("future-timestamp") == future


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(record_strategy(3.0), min_size=1, max_size=150),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 3_000_000_000)), min_size=1, max_size=12),
    st.lists(st.integers(0, 400), max_size=4),
)
def test_future_records_anywhere_change_nothing(specs, inserts, cuts):
    """Any number of records stamped beyond max_future, anywhere in a stream: every result, every
    late record and every other rejection stays the same; each is rejected future-timestamp."""
    lines = make_lines(specs)
    now = (BASE + 400) * S  # the data ends well before: a clock after it, as in replay
    base_items = [Clock(now), *lines]
    with_future = list(lines)
    for pos, ahead_s in sorted(inserts, reverse=True):
        rec = {
            "@timestamp": now / S + RULES.max_future / S + ahead_s / 1000,
            "client_ip": "10.9.9.9",
            "host": "a.example.com",
            "status": 404,
            "request_time": 0.9,
            "country": "US",
        }
        with_future.insert(pos % (len(with_future) + 1), orjson.dumps(rec))
    pipe0, sink0 = run_pipeline(base_items, RULES, cuts)
    pipe1, sink1 = run_pipeline([Clock(now), *with_future], RULES, cuts)
    assert_same(RULES, sink1.rows(RULES), sink0.rows(RULES))
    assert pipe1.stats.late == pipe0.stats.late
    assert sink1.reasons().count("future-timestamp") == len(inserts)
    others = [d for d in sink1.rejected if d["reason"] != "future-timestamp"]
    assert sorted(d["raw"] for d in others) == sorted(d["raw"] for d in sink0.rejected)
    assert pipe1.stats.records == pipe0.stats.records


# ------------------------------------------------------------------- the issues' cases, small

DEFAULTS = load_rules()


def _rec(ts: float, client: str = "10.0.0.1", status: int = 200, host: str = "h.example.com") -> bytes:
    return orjson.dumps(
        {"@timestamp": ts, "client_ip": client, "host": host, "status": status, "request_time": 0.1, "country": "US"}
    )


def test_quiet_spell_then_the_present_is_counted_as_if_there_had_been_none():
    """Issue 16: records at the present, a quiet spell longer than the idle timeout (the idle
    advance runs), records at the present again: nothing late, and the two halves count together."""
    t0 = BASE * S
    before = [_rec(BASE + 0.5 * i, "10.0.0.1") for i in range(6)]
    after = [_rec(BASE + 35 + 0.1 * i, "10.0.0.1") for i in range(6)]
    burst = [_rec(BASE + 36 + 0.1 * i, "10.0.0.2") for i in range(15)]
    quiet = [Clock(t0 + 3 * S), *before, Clock(t0 + 34 * S, idle=True), Clock(t0 + 35 * S), *after, Clock(t0 + 37 * S), *burst]
    pipe, sink = run_pipeline(quiet, DEFAULTS, end_of_input=False)
    assert pipe.stats.late == 0 and "late" not in sink.reasons()
    alerts = {r[2] for r in sink.rows(DEFAULTS)["goal1-topic"]}
    assert alerts == {("10.0.0.2",)}  # client 1: 6 + 6 in 35 s, never 11 in 20 s; client 2 bursts
    # the minute the quiet spell fell in was not closed by it
    assert sink.rows(DEFAULTS)["goal3-topic"] == []
    # and the same stream with no quiet spell at all gives the same results
    _, sink2 = run_pipeline([Clock(t0 + 37 * S), *before, *after, *burst], DEFAULTS, end_of_input=False)
    assert_same(DEFAULTS, sink.rows(DEFAULTS), sink2.rows(DEFAULTS))
    # a pause shorter than the window: before and after count in the same windows and alert
    pipe3, sink3 = run_pipeline(
        [
            Clock(t0 + 3 * S),
            *before,
            Clock(t0 + 8 * S, idle=True),
            Clock(t0 + 9 * S),
            *[_rec(BASE + 9 + 0.1 * i, "10.0.0.1") for i in range(6)],
        ],
        DEFAULTS,
        end_of_input=False,
    )
    assert {r[2] for r in sink3.rows(DEFAULTS)["goal1-topic"]} == {("10.0.0.1",)}
    assert pipe3.stats.late == 0


def test_idle_advance_closes_windows_as_the_clock_passes_them():
    t0 = BASE * S
    recs = [_rec(BASE + 10 + i) for i in range(20)]  # 06:50:10 .. 06:50:29
    pipe, sink = run_pipeline([Clock(t0 + 30 * S), *recs, Clock(t0 + 65 * S, idle=True)], DEFAULTS, end_of_input=False)
    assert sink.rows(DEFAULTS)["goal3-topic"] == []  # minute ends 06:51:00; clock - lateness = 06:50:55
    assert pipe.engine.watermark == t0 + 55 * S
    pipe.clock.now = t0 + 70 * S
    pipe.idle_advance()
    assert sink.rows(DEFAULTS)["goal3-topic"] == [(t0, t0 + 60 * S, ("US",), 20)]
    # nothing open: the watermark stays at the newest window's end, however far the clock goes
    pipe.clock.now = t0 + 3600 * S
    pipe.idle_advance()
    assert pipe.engine.watermark == t0 + 60 * S


def test_a_backlog_far_behind_the_clock_has_every_window_closed_on_idle():
    """Issue 16: old records, then silence: the idle advance emits every window, exactly what
    end of input emits."""
    specs = [
        {
            "step": 0.05,
            "back": 0.0,
            "client": ["10.0.0.1", "10.0.0.2"][i % 2],
            "host": "a.example.com",
            "status": [200, 404][i % 3 == 0],
            "rt": 0.25,
            "country": "US",
            "method": "GET",
            "server": "s1",
            "iso": False,
            "bad": 5,
        }
        for i in range(4000)
    ]
    lines = make_lines(specs)
    now = (BASE + 86_400) * S  # a day later
    idle, sink_idle = run_pipeline([Clock(now), *lines, Clock(now + 30 * S, idle=True)], DEFAULTS, end_of_input=False)
    _, sink_end = run_pipeline([Clock(now), *lines], DEFAULTS, end_of_input=True)
    assert_same(DEFAULTS, sink_idle.rows(DEFAULTS), sink_end.rows(DEFAULTS))
    assert all(sink_end.rows(DEFAULTS)[r.name] for r in DEFAULTS.rules)
    assert idle.engine.open_state_rows() == 0


def test_the_watermark_never_passes_the_clock():
    """A record ahead of the clock (within max_future) is counted, but cannot make the present late."""
    t0 = BASE * S
    items = [Clock(t0), _rec(BASE + 240, "10.0.0.9"), *[_rec(BASE - 1 + 0.1 * i) for i in range(20)]]
    pipe, sink = run_pipeline(items, DEFAULTS, end_of_input=False)
    assert pipe.stats.late == 0 and pipe.stats.rejected == 0
    assert pipe.engine.watermark == t0 - DEFAULTS.lateness
    assert {r[2] for r in sink.rows(DEFAULTS)["goal1-topic"]} == {("10.0.0.1",)}


def test_one_record_from_the_year_2100_is_rejected_and_poisons_nothing():
    """Issue 18's case: 3,000 records 0.1 s apart, ten minutes old, record 1,000 from 2100."""
    now = (BASE + 900) * S
    lines = [_rec(BASE + 0.1 * i, f"10.0.{i % 7}.1", 404 if i % 5 == 0 else 200, f"h{i % 3}") for i in range(3000)]
    poisoned = list(lines)
    poisoned[999] = orjson.dumps({**orjson.loads(lines[999]), "@timestamp": 4102444800})
    clean = lines[:999] + lines[1000:]
    pipe, sink = run_pipeline([Clock(now), *poisoned], DEFAULTS, cuts=[500, 999, 1000, 2000])
    _, ref_sink = run_pipeline([Clock(now), *clean], DEFAULTS)
    assert sink.reasons() == ["future-timestamp"]
    assert sink.rejected[0]["line"] == 999 and "5m ahead of the wall clock" in sink.rejected[0]["detail"]
    assert pipe.stats.late == 0 and pipe.stats.records == 2999 and pipe.stats.reasons == {"future-timestamp": 1}
    assert_same(DEFAULTS, sink.rows(DEFAULTS), ref_sink.rows(DEFAULTS))


def test_snapshot_restore_keeps_the_clock_driven_watermark():
    t0 = BASE * S
    pipe, _ = run_pipeline(
        [Clock(t0 + 5 * S), *[_rec(BASE + i) for i in range(5)], Clock(t0 + 50 * S, idle=True)], DEFAULTS, end_of_input=False
    )
    assert pipe.engine.watermark == t0 + 40 * S  # clock - lateness (the minute is still open)
    eng = Engine(DEFAULTS)
    eng.restore(pipe.engine.snapshot())
    assert eng.watermark == pipe.engine.watermark
    # a record for a window the idle advance closed is late in the restored engine too
    out = eng.process(parse_chunk(_rec(BASE + 2)).records, now=t0 + 51 * S)
    assert out.late_count == 1


@pytest.mark.parametrize(
    "value, ok",
    [("5m", True), ("1s", True), ("1d", True), ("0s", False), ("500ms", False), ("2d", False), ("soon", False), (-5, False)],
)
def test_max_future_is_bounded_and_validated(value, ok):
    text = f"lateness: 10s\nmax_future: {value}\nrules: [{{name: r, window: 1m, group_by: host, aggregate: count}}]"
    if ok:
        rs = load_rules_text(text)
        assert load_rules_text(rs.to_yaml()).max_future == rs.max_future
        assert rs.with_lateness(S).max_future == rs.max_future
    else:
        with pytest.raises(RulesError, match="max_future"):
            load_rules_text(text)


def test_default_max_future_is_five_minutes_and_checkpoints_ignore_it():
    assert DEFAULTS.max_future == 300 * S and DEFAULTS.to_dict()["max_future"] == "5m"
    eng = Engine(DEFAULTS)
    other = load_rules_text(DEFAULTS.to_yaml().replace("max_future: 5m", "max_future: 1m"))
    Engine(other).restore(eng.snapshot())  # the guard decides what reaches the engine, not its state
