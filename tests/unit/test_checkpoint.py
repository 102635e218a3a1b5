"""Checkpoints: snapshot + delta log restore the engine exactly; the format is data, never code;
a torn log tail is ignored; newer formats and old pickles are refused."""

from __future__ import annotations

import os
import pickle
import struct

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookout import checkpoint as ck
from lookout.engine import Engine
from lookout.records import parse_chunk
from lookout.rules import load_rules
from tests.unit.engine.test_core import (
    CUSTOM,
    DEFAULT_SMALL,
    _collect,
    assert_same,
    make_lines,
    record_strategy,
    run_engine,
)

# one client's plain records, as make_lines takes them (step: seconds between records)
SPEC = {
    "step": 0.2,
    "back": 0.0,
    "client": "10.0.0.1",
    "host": "a",
    "status": 404,
    "rt": 0.1,
    "country": "US",
    "method": "GET",
    "server": "s",
    "iso": False,
    "bad": 5,
}


def _panes(eng: Engine) -> dict[str, list]:
    out = {}
    for r in eng.runners:
        df = r.panes if r.panes is not None else None
        out[r.rule.name] = None if df is None else sorted(df.rows(), key=repr)
    return out


def _state(eng: Engine) -> tuple:
    return _panes(eng), eng.max_ts, eng.watermark, [r.closed_k for r in eng.runners]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(record_strategy(3.0), min_size=1, max_size=160),
    st.lists(st.integers(0, 400), max_size=8),
    st.lists(st.sampled_from(["delta", "snapshot", "close", "none"]), min_size=1, max_size=12),
    st.booleans(),
)
def test_snapshot_plus_deltas_restore_the_exact_state(specs, cuts, actions, default_rules):
    """At every commit, an engine rebuilt from the last snapshot and the deltas since holds the
    same panes, watermark and closed windows as the live one, and goes on to the same results."""
    rs = DEFAULT_SMALL if default_rules else CUSTOM
    lines = make_lines(specs)
    whole, _, _ = run_engine(lines, rs, [])
    eng = Engine(rs)
    snap = eng.snapshot()
    deltas: list[bytes] = []
    out: dict[str, list] = {r.name: [] for r in rs.rules}
    bounds = sorted({0, len(lines), *[c % (len(lines) + 1) for c in cuts]})
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        _collect(rs, eng.process(parse_chunk(b"\n".join(lines[a:b]) + b"\n").records).results, out)
        act = actions[i % len(actions)]
        if act == "close" and b < len(lines):  # an idle close mid-stream (later records may be late)
            _collect(rs, eng.close_all().results, out)
            whole = None  # results now differ from the uninterrupted run; state must still match
        if act in ("delta", "close"):
            deltas.append(eng.delta())
        elif act == "snapshot":
            snap, deltas = eng.snapshot(), []
        else:
            continue
        again = Engine(rs)
        again.restore(snap, deltas)
        assert _state(again) == _state(eng)
        eng = again  # go on from the restored copy: any difference shows in the results
    _collect(rs, eng.close_all().results, out)
    if whole is not None:
        assert_same(rs, out, whole)


def test_restore_refuses_other_rules():
    eng = Engine(DEFAULT_SMALL)
    with pytest.raises(ck.CheckpointError, match="different rules"):
        Engine(CUSTOM).restore(eng.snapshot())


def test_blob_is_json_and_arrow_and_refuses_newer_formats():
    eng = Engine(load_rules())
    lines = make_lines([dict(SPEC, step=0.1, status=200)] * 50)
    eng.process(parse_chunk(b"\n".join(lines)).records)
    blob = eng.snapshot()
    head, tables = ck.decode(blob)
    assert blob[:4] == b"LKCK" and head["kind"] == "engine-snapshot" and head["fields"]["max_ts"] == eng.max_ts
    assert {t for t in tables if t.startswith("panes/")} == {f"panes/{r.rule.name}" for r in eng.runners if r.panes is not None}
    # alert rules' open alerted windows (incidents need their final values) travel whole
    assert {t for t in tables if t.startswith("alerted/")} == {
        f"alerted/{r.rule.name}" for r in eng.runners if r.alerted is not None
    }
    assert all(isinstance(t, pl.DataFrame) for t in tables.values())
    newer = blob[:4] + struct.pack("<H", ck.FORMAT + 1) + blob[6:]
    with pytest.raises(ck.CheckpointError, match="newer lookout"):
        Engine(load_rules()).restore(newer)


class Boom:
    """Unpickling this runs os.system: proof that nothing in a checkpoint is ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(Boom(marker))
    state = tmp_path / "state"
    (state / "checkpoint").mkdir(parents=True)
    # as the old checkpoint file: refused with how to proceed
    (state / "checkpoint.pkl").write_bytes(evil)
    with pytest.raises(ck.CheckpointError, match="pickle.*never loads.*mv "):
        ck.Checkpointer(state).load(Engine(load_rules()))
    (state / "checkpoint.pkl").unlink()
    # as a snapshot, framed with a valid CRC, and as a log record after a real snapshot
    (state / "checkpoint" / "snapshot-00000001.lkc").write_bytes(ck.frame(evil))
    with pytest.raises(ck.CheckpointError, match="not a lookout checkpoint"):
        ck.Checkpointer(state).load(Engine(load_rules()))
    c = ck.Checkpointer(state)
    (state / "checkpoint" / "snapshot-00000001.lkc").unlink()
    c.save({"position": 1}, Engine(load_rules()))
    (state / "checkpoint" / "log-00000001.lkc").write_bytes(ck.frame(evil))
    with pytest.raises(ck.CheckpointError, match="not a lookout checkpoint"):
        ck.Checkpointer(state).load(Engine(load_rules()))
    assert not marker.exists()


def test_torn_log_tail_is_ignored_and_cut_before_the_next_append(tmp_path):
    rs = load_rules()
    eng = Engine(rs)
    c = ck.Checkpointer(tmp_path)
    spec = SPEC
    lines = make_lines([spec] * 300)
    for i in range(3):
        eng.process(parse_chunk(b"\n".join(lines[i * 100 : (i + 1) * 100])).records)
        c.save({"position": i}, eng)
    c.close()
    log = tmp_path / "checkpoint" / "log-00000001.lkc"
    whole = log.read_bytes()
    frames, end = ck.read_frames(whole)
    assert len(frames) == 2 and end == len(whole)  # the first save was the snapshot
    for cut in (len(whole) - 1, len(whole) - len(frames[1]) // 2, len(whole) - len(frames[1]) - 3):
        log.write_bytes(whole[:cut])  # a crash mid-append
        again = Engine(rs)
        meta = ck.Checkpointer(tmp_path).load(again)
        assert meta == {"position": 1}
        assert log.stat().st_size == len(whole) - len(ck.frame(frames[1]))  # torn bytes cut off
    flipped = bytearray(whole)
    flipped[-5] ^= 0xFF  # a bad CRC is a torn record too
    log.write_bytes(bytes(flipped))
    c2 = ck.Checkpointer(tmp_path)
    assert c2.load(Engine(rs)) == {"position": 1}
    c2.save({"position": 9}, eng)
    c2.close()
    assert ck.load_meta(tmp_path) == {"position": 9}


def test_log_grows_until_a_snapshot_replaces_it(tmp_path):
    rs = load_rules()
    eng = Engine(rs)
    c = ck.Checkpointer(tmp_path, snapshot_every=1.0)
    kinds = []
    spec = dict(SPEC, step=0.01)
    for i in range(60):
        specs = [dict(spec, client=f"10.0.{i}.{j}") for j in range(200)]
        eng.process(parse_chunk(b"\n".join(make_lines(specs))).records)
        kinds.append(c.save({"i": i}, eng).kind)
    c.close()
    assert kinds[0] == "snapshot" and kinds.count("snapshot") >= 2 and kinds.count("delta") > 40
    assert len(list((tmp_path / "checkpoint").iterdir())) == 2  # one generation kept
    again = Engine(rs)
    assert ck.Checkpointer(tmp_path).load(again) == {"i": 59}
    assert _state(again) == _state(eng)
    assert orjson.loads(orjson.dumps(ck.load_meta(tmp_path))) == {"i": 59}


def test_well_framed_but_malformed_content_is_refused(tmp_path):
    rs = load_rules()
    eng = Engine(rs)
    spec = SPEC
    eng.process(parse_chunk(b"\n".join(make_lines([spec] * 50))).records)
    head, tables = eng.checkpoint_state(full=True)
    bad_tables = dict(tables, **{"panes/goal1-topic": pl.DataFrame({"x": [1]})})
    with pytest.raises(ck.CheckpointError, match="columns"):
        Engine(rs).restore(ck.encode(head, bad_tables))
    retyped = dict(tables, **{"panes/goal1-topic": tables["panes/goal1-topic"].with_columns(q=pl.col("q").cast(pl.String))})
    with pytest.raises(ck.CheckpointError, match="columns"):
        Engine(rs).restore(ck.encode(head, retyped))
    with pytest.raises(ck.CheckpointError, match="watermark"):
        Engine(rs).restore(ck.encode(dict(head, fields={"max_ts": 1, "watermark": "late"}), tables))
    bad_head = dict(head, runners={**head["runners"], "goal1-topic": {"closed_k": "soon", "panes": True}})
    for state in (tmp_path / "a", tmp_path / "b"):
        (state / "checkpoint").mkdir(parents=True)
    (tmp_path / "a" / "checkpoint" / "snapshot-00000001.lkc").write_bytes(
        ck.frame(ck.encode({"kind": "checkpoint", "meta": {}, "engine": bad_head}, tables))
    )
    with pytest.raises(ck.CheckpointError, match="malformed"):
        ck.Checkpointer(tmp_path / "a").load(Engine(rs))
    (tmp_path / "b" / "checkpoint" / "snapshot-00000001.lkc").write_bytes(ck.frame(ck.encode({"kind": "checkpoint"}, tables)))
    with pytest.raises(ck.CheckpointError, match="lacks"):
        ck.Checkpointer(tmp_path / "b").load(Engine(rs))


def test_changes_are_tracked_only_once_checkpoints_are_taken():
    """Replay never checkpoints: the engine must not pile up change records for it. A delta
    taken without an earlier checkpoint falls back to the whole state, so it is still exact."""
    rs = load_rules()
    spec = dict(SPEC, step=0.05)
    lines = make_lines([dict(spec, client=f"10.0.0.{i % 200}") for i in range(1000)])
    eng = Engine(rs)
    empty = eng.snapshot()  # taken by a fresh engine; tracking starts here
    fresh = Engine(rs)
    for i in range(5):
        fresh.process(parse_chunk(b"\n".join(lines[i * 200 : (i + 1) * 200])).records)
    assert all(not r._touched for r in fresh.runners)
    again = Engine(rs)
    again.restore(empty, [fresh.delta()])
    assert _state(again) == _state(fresh)


def test_a_journal_is_whole_in_a_snapshot_and_only_its_new_rows_in_a_delta(tmp_path):
    """The duplicate guard's ids: a delta carries the interval's new ids, not the whole table
    (megabytes per commit at a high rate), and a restore gets them all back."""
    from lookout.engine.dedup import SeenIds

    rs = load_rules()
    eng = Engine(rs)
    seen = SeenIds(horizon_us=10**12)
    c = ck.Checkpointer(tmp_path)
    base = 1_700_000_000_000_000
    for i in range(4):
        ids = pl.Series([f"f-{i}-{k}" for k in range(1000)])
        seen.first_seen(ids, pl.Series([base + i * 1000 + k for k in range(1000)], dtype=pl.Int64))
        c.save({"position": i}, eng, journals={"dedup": seen})
    c.close()
    frames, _ = ck.read_frames((tmp_path / "checkpoint" / "log-00000001.lkc").read_bytes())
    assert len(frames) == 3
    for f in frames:
        _, tables = ck.decode(f)
        assert list(tables)[-1:] == ["run/dedup+"] and tables["run/dedup+"].height == 1000  # the commit's new ids only
    _, snap = ck.decode(ck.read_frames((tmp_path / "checkpoint" / "snapshot-00000001.lkc").read_bytes())[0][0])
    assert snap["run/dedup"].height == 1000
    again = ck.Checkpointer(tmp_path)
    assert again.load(Engine(rs)) == {"position": 3}
    assert sorted(again.tables["dedup"]["id"]) == sorted(seen.table()["id"])
    assert again.tables["dedup"].height == 4000
