"""Incidents (issue 10) equal the brute-force definition (tests/reference.py) on random streams
with disorder and random batch cuts, for alert and final rules; transitions are well formed."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookout.engine import Engine
from lookout.incidents import IncidentTracker, Transition
from lookout.records import parse_chunk
from lookout.rules import load_rules_text
from tests.reference import reference_incidents
from tests.unit.engine.test_core import BASE, make_lines, record_strategy

RULES = load_rules_text("""
lateness: 3s
rules:
  - {name: hop-count, window: {size: 5s, hop: 1s}, group_by: client_ip, aggregate: count, threshold: count > 2}
  - {name: gap-count, window: {size: 4s, hop: 2s}, group_by: host, aggregate: count, threshold: count > 1, incident_gap: 3s}
  - {name: sum-alert, window: {size: 4s, hop: 2s}, group_by: host, aggregate: sum(request_time),
     threshold: sum(request_time) >= 0.6}
  - {name: max-alert, window: 3s, group_by: [client_ip, method], aggregate: max(request_time), threshold: max(request_time) > 0.4}
  - {name: min-alert, window: {size: 3s, hop: 1s}, group_by: host, aggregate: min(request_time),
     threshold: min(request_time) <= 0.05}
  - {name: fin-count, window: {size: 4s, hop: 1s}, filter: {status: 4xx}, group_by: host, aggregate: count,
     threshold: count >= 2, emit: final}
  - {name: fin-avg, window: {size: 6s, hop: 3s}, group_by: host, aggregate: avg(request_time),
     threshold: avg(request_time) > 0.3, emit: final, incident_gap: 4s}
  - {name: fin-min, window: 2s, group_by: country, aggregate: min(request_time), threshold: min(request_time) < 0.2, emit: final}
  - {name: not-tracked, window: 2s, group_by: host, aggregate: count}
  - {name: any-hit, window: {size: 2s, hop: 1s}, group_by: client_ip, aggregate: count, threshold: count > 0}
  - {name: any-gap, window: 1s, group_by: host, aggregate: count, threshold: count >= 1, incident_gap: 1s}
""")


def run_incidents(lines: list[bytes], rs, cuts: list[int], restore_at: int | None = None) -> list[Transition]:
    eng, tr = Engine(rs), IncidentTracker(rs)
    trans: list[Transition] = []
    bounds = sorted({0, len(lines), *[c % (len(lines) + 1) for c in cuts]})
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if restore_at is not None and i == restore_at:  # a restart from a checkpoint taken here
            blob_e, blob_t = eng.snapshot(), tr.snapshot()
            eng, tr = Engine(rs), IncidentTracker(rs)
            eng.restore(blob_e)
            tr.restore(blob_t)
        out = eng.process(parse_chunk(b"\n".join(lines[a:b]) + b"\n").records)
        trans += tr.step(out, eng.watermark)
    trans += tr.step(eng.close_all(), eng.watermark) + tr.resolve_all()
    return trans


def resolved_set(rs, trans: list[Transition]) -> dict[str, list]:
    out: dict[str, list] = {r.name: [] for r in rs.rules if r.threshold_spec is not None and r.effective_emit != "update"}
    for t in trans:
        if t.status == "resolved":
            i = t.incident
            out[t.rule.name].append((t.key, i.start, i.end, i.windows, i.peak))
    return {k: sorted(v, key=repr) for k, v in out.items()}


def assert_well_formed(trans: list[Transition]) -> None:
    """Each id: one firing first, then exactly one of resolved / merged (into an id firing then)."""
    state: dict[str, str] = {}
    for t in trans:
        if t.status == "firing":
            assert t.id not in state, f"{t.id} fired twice"
            state[t.id] = "firing"
        else:
            assert state.get(t.id) == "firing", f"{t.status} of {t.id} without an open firing"
            state[t.id] = t.status
            if t.status == "merged":
                assert t.merged_into is not None and state.get(t.merged_into) == "firing"
                assert t.doc["merged_into"] == t.merged_into
    assert all(s != "firing" for s in state.values()), "an incident never closed"
    for t in trans:
        d = orjson.loads(t.line)
        assert d["id"] == t.id and d["status"] == t.status and d["rule"] == t.rule.name
        assert list(d["key"]) == list(t.rule.group_by) and d["start"].endswith("Z") and d["end"].endswith("Z")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(record_strategy(3.0), min_size=1, max_size=160),
    st.lists(st.integers(0, 400), max_size=6),
    st.booleans(),
    st.one_of(st.none(), st.integers(0, 6)),
)
def test_incidents_match_reference(specs, cuts, boundary, restore_at):
    lines = make_lines(specs, on_boundary=boundary)
    want = reference_incidents(lines, RULES)
    trans = run_incidents(lines, RULES, cuts, restore_at)
    assert resolved_set(RULES, trans) == want
    assert_well_formed(trans)
    assert not any(t.rule.name == "not-tracked" for t in trans)


def _recs(*times, client="10.0.0.1", rt=0.1):
    return [orjson.dumps({"@timestamp": t, "client_ip": client, "host": "h", "status": 200, "request_time": rt}) for t in times]


def test_one_incident_per_burst_firing_with_the_first_alert():
    rs = load_rules_text(
        "lateness: 2s\nrules: [{name: g1, window: {size: 20s, hop: 1s}, group_by: client_ip, "
        "aggregate: count, threshold: count > 10}]"
    )
    eng, tr = Engine(rs), IncidentTracker(rs)
    burst = _recs(*[BASE + i * 0.1 for i in range(40)])  # 40 requests in 4 s: 21 alerting windows
    out = eng.process(parse_chunk(b"\n".join(burst)).records)
    first = tr.step(out, eng.watermark)
    assert out.results["g1"].height == 21
    assert [t.status for t in first] == ["firing"]  # the same step as the alert rows
    assert first[0].doc["value"] == 11 and first[0].doc["windows"] == 21
    # quiet traffic from other clients moves the watermark; the incident resolves once window
    # [end, end + 20 s) has closed: end = BASE + 22 (last window [BASE+2, BASE+22)), so at wm = BASE + 42
    trans = []
    for i in range(40):
        out = eng.process(parse_chunk(_recs(BASE + 10 + i, client=f"10.0.1.{i}")[0]).records)
        step = tr.step(out, eng.watermark)
        if step:
            assert eng.watermark == (BASE + 42) * 10**6
        trans += step
    assert [t.status for t in trans] == ["resolved"]
    d = trans[0].doc
    assert (d["windows"], d["peak"], d["start"], d["end"]) == (21, 40, "2022-08-03T06:49:42.000Z", "2022-08-03T06:50:22.000Z")
    assert trans[0].id == first[0].id


def test_a_bridging_window_merges_the_later_incident_into_the_earlier():
    rs = load_rules_text(
        "lateness: 60s\nrules: [{name: r, window: {size: 4s, hop: 2s}, group_by: client_ip, "
        "aggregate: count, threshold: count > 1}]"
    )
    eng, tr = Engine(rs), IncidentTracker(rs)
    trans = []
    for batch in (_recs(BASE + 20.5, BASE + 20.6), _recs(BASE + 10.5, BASE + 10.6), _recs(BASE + 15, BASE + 15.1)):
        out = eng.process(parse_chunk(b"\n".join(batch)).records)
        trans += tr.step(out, eng.watermark)
    statuses = [(t.status, t.incident.start // 10**6 - BASE) for t in trans]
    assert statuses == [("firing", 18), ("firing", 8), ("merged", 18)]
    assert trans[2].merged_into == trans[1].id
    trans += tr.step(eng.close_all(), eng.watermark) + tr.resolve_all()
    rest = [(t.status, t.incident.start // 10**6 - BASE, t.incident.end // 10**6 - BASE) for t in trans[3:]]
    assert rest == [("resolved", 8, 24)]
    assert_well_formed(trans)


def test_tracker_state_is_json_data():
    rs = RULES
    eng, tr = Engine(rs), IncidentTracker(rs)
    tr.step(eng.process(parse_chunk(b"\n".join(_recs(*[BASE + i * 0.1 for i in range(10)]))).records), eng.watermark)
    blob = tr.snapshot()
    state = orjson.loads(blob)  # plain JSON, never pickle
    assert state["version"] == 1 and state["rules"]["hop-count"]
    tr2 = IncidentTracker(rs)
    tr2.restore(blob)
    assert tr2.snapshot() == blob and tr2.firing() == tr.firing()


def test_incident_gap_is_validated_and_printed():
    import pytest

    from lookout.rules import RulesError

    rule = "{name: r, window: 10s, group_by: host, aggregate: count, threshold: count > 3, incident_gap: %s}"
    rs = load_rules_text(f"rules: [{rule % '1 minute'}]")
    assert rs.rules[0].incident_gap == 60_000_000 and rs.to_dict()["rules"][0]["incident_gap"] == "1m"
    with pytest.raises(RulesError, match="incident_gap"):
        load_rules_text(f"rules: [{rule % 'soon'}]")


def test_live_view_shows_incidents_firing_first_and_never_renders_markup():
    import io

    from rich.console import Console

    from lookout.live import LiveView
    from lookout.pipeline import Pipeline
    from lookout.sinks.base import Sink

    rs = load_rules_text("lateness: 1s\nrules: [{name: g1, window: 2s, group_by: host, aggregate: count, threshold: count > 1}]")
    pipe = Pipeline(rs, Sink())
    view = LiveView(rs, pipe, "test")
    hostile = "[bold red]evil[/]\x1b[2J"

    def host(t: float, h: str) -> bytes:
        return orjson.dumps({"@timestamp": t, "client_ip": "10.0.0.1", "host": h, "status": 200})

    from lookout.sources.base import Chunk

    for batch in (
        [host(BASE, "old.example"), host(BASE + 0.5, "old.example")],
        [host(BASE + 10, hostile), host(BASE + 10.5, hostile)],
    ):
        rep = pipe.step(Chunk(lines=batch, source="t"))
        view.update(rep.results, rep.incidents)
    con = Console(file=io.StringIO(), width=200, color_system=None)
    con.print(view._render())
    text = con.file.getvalue()
    assert "[bold red]evil[/]\\x1b[2J" in text  # literal, escaped; not styled, no raw escape
    assert "\x1b" not in text
    lines = [ln for ln in text.splitlines() if "firing" in ln or "resolved" in ln]
    assert "firing" in lines[0] and "evil" in lines[0] and "resolved" in lines[1] and "old.example" in lines[1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(record_strategy(3.0), min_size=1, max_size=160),
    st.lists(st.integers(0, 400), max_size=6),
    st.lists(st.integers(0, 400), max_size=6),
)
def test_in_order_input_gives_the_same_ids_however_it_is_cut(specs, cuts_a, cuts_b):
    lines = make_lines([{**s, "back": 0.0} for s in specs])
    a, b = run_incidents(lines, RULES, cuts_a), run_incidents(lines, RULES, cuts_b)
    assert sorted((t.id, t.status) for t in a) == sorted((t.id, t.status) for t in b)
    assert sorted(t.line for t in a if t.status == "resolved") == sorted(t.line for t in b if t.status == "resolved")
    assert not any(t.status == "merged" for t in a)  # in order, a window never bridges two incidents


DEEP = load_rules_text("""
lateness: 30s
rules:
  - {name: any-hit, window: {size: 2s, hop: 1s}, group_by: client_ip, aggregate: count, threshold: count > 0}
  - {name: pair, window: 3s, group_by: client_ip, aggregate: count, threshold: count >= 2, incident_gap: 2s}
  - {name: slow, window: {size: 4s, hop: 2s}, group_by: client_ip, aggregate: max(request_time),
     threshold: max(request_time) > 0.5}
""")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 25), st.sampled_from(["10.0.0.1", "10.0.0.2"]), st.sampled_from([0.1, 0.9])),
        min_size=1,
        max_size=30,
    ),
    st.lists(st.integers(0, 30), max_size=15),
)
def test_deep_disorder_merges_incidents_like_the_reference(recs, cuts):
    """Sparse records in any order within the lateness: windows arrive out of start order, so
    incidents fire separately and merge when a window bridges them."""
    lines = [
        orjson.dumps({"@timestamp": BASE + t, "client_ip": c, "host": "h", "status": 200, "request_time": rt})
        for t, c, rt in recs
    ]
    trans = run_incidents(lines, DEEP, cuts)
    assert resolved_set(DEEP, trans) == reference_incidents(lines, DEEP)
    assert_well_formed(trans)
