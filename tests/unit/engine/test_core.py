"""The engine equals the brute-force reference (tests/reference.py) on random streams, whatever
the batch boundaries; plus window edge cases."""

from __future__ import annotations

from datetime import UTC

import orjson
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookout.engine import Engine
from lookout.records import parse_chunk
from lookout.rules import load_rules, load_rules_text
from tests.reference import reference

BASE = 1_659_509_400  # 2022-08-03T06:50:00Z

CUSTOM = load_rules_text("""
lateness: 3s
rules:
  - {name: hop-count, window: {size: 5s, hop: 2s}, group_by: client_ip, aggregate: count, threshold: count > 3}
  - {name: hop-final, window: {size: 4s, hop: 1s}, filter: {status: [4xx, 500-503]}, group_by: [host, method], aggregate: count, emit: final}
  - {name: max-rt, window: 3s, group_by: host, aggregate: max(request_time), emit: final}
  - {name: min-rt, window: {size: 6s, hop: 3s}, group_by: country, aggregate: min(request_time), threshold: "min(request_time) < 0.2", emit: final}
  - {name: avg-rt, window: 2s, group_by: host, aggregate: avg(request_time)}
  - {name: sum-alert, window: {size: 4s, hop: 2s}, group_by: host, aggregate: sum(request_time), threshold: sum(request_time) >= 1.5}
  - {name: max-alert, window: 5s, group_by: client_ip, aggregate: max(request_time), threshold: max(request_time) > 0.8}
  - {name: min-alert, window: {size: 3s, hop: 1s}, group_by: host, aggregate: min(request_time), threshold: min(request_time) <= 0.05}
  - {name: sum-status, window: 10s, filter: {method: GET}, group_by: server, aggregate: sum(status)}
  - {name: upd, window: {size: 4s, hop: 2s}, group_by: host, aggregate: count, emit: update}
  - {name: path-404, window: 3s, filter: {status: 404}, group_by: path, aggregate: count, emit: final}
  - {name: bytes-client, window: {size: 4s, hop: 2s}, group_by: client_ip, aggregate: sum(bytes), emit: final}
  - {name: bytes-alert, window: 4s, group_by: host, aggregate: sum(bytes), threshold: sum(bytes) >= 2560.5}
  - {name: avg-bytes, window: 3s, filter: {bytes: 1-100000}, group_by: [path, user_agent], aggregate: avg(bytes),
     threshold: avg(bytes) > 1000.5, emit: final}
  - {name: max-bytes, window: 2s, filter: {path: ["/a", "/b?x=1"], referer: "https://r.example/"}, group_by: referer,
     aggregate: max(bytes)}
""")
DEFAULT_SMALL = load_rules_text("""
lateness: 2s
rules:
  - {name: goal1-topic, window: {size: 20s, hop: 1s}, group_by: client_ip, aggregate: count, threshold: count > 10}
  - {name: goal2-topic, window: {size: 30s, hop: 1s}, filter: {status: 400-499}, group_by: host, aggregate: count, threshold: count > 15}
  - {name: goal3-topic, window: 1 minute, filter: {status: 200-299}, group_by: country, aggregate: count}
  - {name: goal4-topic, window: 1 minute, group_by: host, aggregate: avg(request_time)}
""")


def record_strategy(lateness_s: float):
    return st.fixed_dictionaries(
        {
            "step": st.floats(0, 1.5),
            "back": st.one_of(st.just(0.0), st.floats(0, lateness_s * 1.6)),  # sometimes beyond lateness
            "client": st.sampled_from(["10.0.0.1", "10.0.0.2", "2001:db8::1", "10.0.0.4"]),
            "host": st.sampled_from(["a.example.com", "b.example.com", "c.example.com"]),
            "status": st.sampled_from([200, "200", 201, 304, 404, "404", 403, 500, 503]),
            "rt": st.one_of(st.none(), st.just("-"), st.sampled_from([0.0, 0.01, 0.05, 0.2, 0.5, 0.9, "0.3", "1.25"])),
            "country": st.one_of(st.none(), st.sampled_from(["US", "DE", "-", ""])),
            "method": st.sampled_from(["GET", "POST", None]),
            "server": st.sampled_from(["s1", "s2"]),
            "path": st.one_of(st.none(), st.sampled_from(["/", "/a", "/b?x=1", "-"])),
            "bytes": st.one_of(st.none(), st.sampled_from([0, 512, "2048", "-", 100_000, 512.0, "1001"])),
            "ua": st.one_of(st.none(), st.sampled_from(["curl/8", "Mozilla/5.0", "-"])),
            "referer": st.one_of(st.none(), st.sampled_from(["https://r.example/", "-"])),
            "iso": st.booleans(),
            "bad": st.integers(0, 30),
        }
    )


def make_lines(specs: list[dict], on_boundary: bool = False) -> list[bytes]:
    lines = []
    clock = float(BASE)
    for s in specs:
        clock += s["step"]
        t = clock - s["back"]
        if on_boundary:
            t = float(round(t))
        t = round(t, 3)
        ts: object = t
        if s["iso"]:
            from datetime import datetime

            ts = datetime.fromtimestamp(t, tz=UTC).isoformat()
        elif s["bad"] % 3 == 0:
            ts = f"{t:.3f}"
        rec = {
            "@timestamp": ts,
            "client_ip": s["client"],
            "host": s["host"],
            "status": s["status"],
            "request_time": s["rt"],
            "country": s["country"],
            "method": s["method"],
            "server": s["server"],
        }
        for key, name in (("path", "path"), ("bytes", "bytes"), ("ua", "user_agent"), ("referer", "referer")):
            if s.get(key) is not None:  # optional: absent in most old-style records
                rec[name] = s[key]
        if s["bad"] == 0:
            lines.append(b"{not json")
            continue
        if s["bad"] == 1:
            rec["status"] = 700
        lines.append(orjson.dumps(rec))
    return lines


def run_engine(lines: list[bytes], rs, cuts: list[int]) -> tuple[dict, int, int]:
    eng = Engine(rs)
    out: dict[str, list] = {r.name: [] for r in rs.rules}
    rejected = late = 0
    bounds = sorted({0, len(lines), *[c % (len(lines) + 1) for c in cuts]})
    for a, b in zip(bounds, bounds[1:], strict=False):
        parsed = parse_chunk(b"\n".join(lines[a:b]) + b"\n")
        rejected += len(parsed.rejected)
        res = eng.process(parsed.records)
        late += res.late_count
        _collect(rs, res.results, out)
    _collect(rs, eng.close_all().results, out)
    return out, rejected, late


def _collect(rs, results: dict[str, pl.DataFrame], out: dict) -> None:
    for name, df in results.items():
        nk = len(rs.by_name[name].group_by)
        for row in df.iter_rows():
            out[name].append((row[0], row[1], tuple(row[2 : 2 + nk]), row[-1]))


def _last(rows: list) -> dict:
    out = {}
    for start, end, key, v in rows:
        out[(start, end, key)] = v
    return out


def assert_same(rs, got, want) -> None:
    for r in rs.rules:
        g, w = got[r.name], want[r.name]
        if r.effective_emit == "update":
            # re-emitted on change: the last value per (window, key) is the final one
            assert _last(g) == _last(w), r.name
            continue
        assert sorted(g, key=repr) == sorted(w, key=repr), r.name


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record_strategy(3.0), min_size=1, max_size=160), st.lists(st.integers(0, 400), max_size=6), st.booleans())
def test_custom_rules_match_reference(specs, cuts, boundary):
    lines = make_lines(specs, on_boundary=boundary)
    want, w_rej, w_late = reference(lines, CUSTOM)
    got, g_rej, g_late = run_engine(lines, CUSTOM, cuts)
    assert (g_rej, g_late) == (w_rej, w_late)
    assert_same(CUSTOM, got, want)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record_strategy(2.0), min_size=1, max_size=250), st.lists(st.integers(0, 400), max_size=5))
def test_seed_rules_match_reference(specs, cuts):
    lines = make_lines(specs)
    want, w_rej, w_late = reference(lines, DEFAULT_SMALL)
    got, g_rej, g_late = run_engine(lines, DEFAULT_SMALL, cuts)
    assert (g_rej, g_late) == (w_rej, w_late)
    assert_same(DEFAULT_SMALL, got, want)


def test_batch_boundaries_do_not_change_results():
    specs = [
        {
            "step": 0.07,
            "back": (i * 7919 % 13) / 10,
            "client": ["10.0.0.1", "10.0.0.2"][i % 2],
            "host": "a.example.com",
            "status": [200, 404][i % 3 == 0],
            "rt": 0.1 * (i % 5),
            "country": "US",
            "method": "GET",
            "server": "s1",
            "iso": False,
            "bad": 5,
        }
        for i in range(3000)
    ]
    lines = make_lines(specs)
    rs = load_rules()
    one, _, _ = run_engine(lines, rs, [])
    many, _, _ = run_engine(lines, rs, list(range(0, 3000, 37)))
    assert_same(rs, many, one)
    assert one["goal1-topic"] and one["goal2-topic"] and one["goal3-topic"] and one["goal4-topic"]


def _lines(*recs):
    return [orjson.dumps({"client_ip": "10.0.0.1", "host": "h", "status": 200, **r}) for r in recs]


def test_window_boundaries_are_half_open():
    rs = load_rules_text("rules: [{name: r, window: 10s, group_by: host, aggregate: count}]")
    got, _, _ = run_engine(_lines({"@timestamp": BASE}, {"@timestamp": BASE + 9.999999}, {"@timestamp": BASE + 10}), rs, [])
    assert sorted(got["r"]) == [
        (BASE * 10**6, (BASE + 10) * 10**6, ("h",), 2),
        ((BASE + 10) * 10**6, (BASE + 20) * 10**6, ("h",), 1),
    ]


def test_alert_fires_once_with_count_at_crossing():
    rs = load_rules()
    recs = [{"@timestamp": BASE + i * 0.1} for i in range(40)]  # 40 requests in 4 s from one client
    got, _, _ = run_engine(_lines(*recs), rs, [7, 19])
    alerts = got["goal1-topic"]
    assert alerts and all(v == 11 for *_, v in alerts)
    assert len(alerts) == len({(s, k) for s, _, k, _ in alerts})  # once per (window, key)
    # windows [s, s+20) holding more than 10 of the records: s = BASE-18 ... BASE+2
    starts = sorted(s // 10**6 - BASE for s, *_ in alerts)
    assert starts == list(range(-18, 3))


def test_late_record_is_dead_lettered_and_not_counted():
    rs = load_rules_text("lateness: 5s\nrules: [{name: r, window: 10s, group_by: host, aggregate: count}]")
    lines = _lines({"@timestamp": BASE + 1}, {"@timestamp": BASE + 30}, {"@timestamp": BASE + 2}, {"@timestamp": BASE + 26})
    eng = Engine(rs)
    parsed = parse_chunk(b"\n".join(lines))
    out = eng.process(parsed.records)
    assert out.late is not None and out.late.get_column("line").to_list() == [2]
    res = pl.concat([out.results["r"], eng.close_all().results["r"]])
    assert sorted(res.select("_start", "value").rows()) == [(s * 10**6, 1) for s in (BASE, BASE + 20, BASE + 30)]


def test_state_is_freed_as_windows_close():
    rs = load_rules()
    eng = Engine(rs)
    for minute in range(30):
        lines = [
            orjson.dumps(
                {
                    "@timestamp": BASE + minute * 60 + i * 0.5,
                    "client_ip": f"10.0.{i % 50}.1",
                    "host": "h",
                    "status": 404 if i % 4 == 0 else 200,
                    "country": "US",
                    "request_time": 0.1,
                }
            )
            for i in range(120)
        ]
        eng.process(parse_chunk(b"\n".join(lines)).records)
    # open windows span at most lateness + the longest window: about a minute of panes, not 30
    assert eng.open_state_rows() < 2 * 120 + 200


def test_snapshot_restore_continues_identically():
    rs = load_rules()
    specs = [
        {
            "step": 0.05,
            "back": 0.0,
            "client": "10.0.0.1",
            "host": "a.example.com",
            "status": 404,
            "rt": 0.25,
            "country": "US",
            "method": "GET",
            "server": "s1",
            "iso": False,
            "bad": 5,
        }
        for _ in range(2000)
    ]
    lines = make_lines(specs)
    whole, _, _ = run_engine(lines, rs, [])
    eng = Engine(rs)
    out: dict[str, list] = {r.name: [] for r in rs.rules}
    _collect(rs, eng.process(parse_chunk(b"\n".join(lines[:900])).records).results, out)
    eng2 = Engine(rs)
    eng2.restore(eng.snapshot())
    _collect(rs, eng2.process(parse_chunk(b"\n".join(lines[900:])).records).results, out)
    _collect(rs, eng2.close_all().results, out)
    assert_same(rs, out, whole)
