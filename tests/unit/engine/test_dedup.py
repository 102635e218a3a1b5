"""The engine's duplicate guard (lookout.engine.dedup): a record whose id was already counted is
skipped while a copy could still be counted, memory stays bounded by the horizon, and the state
survives a restart as data (Arrow IPC) through the run's checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from lookout.engine.dedup import SeenIds
from lookout.pipeline import Pipeline
from lookout.rules import RuleSet
from lookout.runner import Runner, RunOptions
from lookout.sinks.base import Sink
from lookout.sources.base import Chunk, Source

S = 1_000_000
T0 = 1_700_000_000
RULES = RuleSet.model_validate(
    {
        "lateness": "1s",
        "rules": [{"name": "per-second", "window": "1s", "group_by": "server", "aggregate": "count", "emit": "final"}],
    }
)


def line(i: int, t: float) -> bytes:
    return orjson.dumps({"client_ip": f"10.0.0.{i % 250}", "status": "200", "host": "h", "server": "s", "@timestamp": str(t)})


def chunk(ids: list[str], times: list[float], position: Any = None) -> Chunk:
    data = b"\n".join(line(i, t) for i, t in enumerate(times)) + b"\n"
    given = pl.Series("id", ids, dtype=pl.String)
    return Chunk(source="test", data=data, position=position, record_ids=lambda ln: given.gather(ln), repeatable_ids=True)


def test_seen_ids_skip_repeats_within_and_across_batches_and_forget_old_ones() -> None:
    seen = SeenIds(horizon_us=10 * S)
    ts = pl.Series([T0 * S] * 3)
    assert seen.first_seen(pl.Series(["a", "b", "a"]), ts).to_list() == [True, True, False]
    assert seen.first_seen(pl.Series(["b", "c"]), ts[:2]).to_list() == [False, True]
    assert len(seen) == 3
    seen.evict((T0 + 5) * S)  # within the horizon: kept
    assert len(seen) == 3
    seen.evict((T0 + 11) * S)  # beyond it: forgotten (a copy now would be late for every window)
    assert len(seen) == 0
    for k in range(50):  # many steps: parts are merged, memory is what the horizon holds
        seen.first_seen(pl.Series([f"x{k}"]), pl.Series([(T0 + k) * S]))
        seen.evict((T0 + k) * S)
    assert len(seen.parts) <= seen.max_parts and 11 <= len(seen) <= 2 * 11 + seen.max_parts
    assert not any(seen.first_seen(pl.Series([f"x{k}" for k in range(39, 50)]), pl.Series([(T0 + 49) * S] * 11)))


def test_state_round_trips_as_arrow_ipc_and_refuses_other_tables() -> None:
    seen = SeenIds(horizon_us=10 * S)
    seen.first_seen(pl.Series(["a", "b"]), pl.Series([T0 * S, T0 * S]))
    blob = seen.to_bytes()
    assert blob and all(b[:6] == b"ARROW1" for b in blob)  # data, not pickle
    again = SeenIds(horizon_us=10 * S)
    again.load_bytes(blob)
    assert again.first_seen(pl.Series(["a", "z"]), pl.Series([T0 * S, T0 * S])).to_list() == [False, True]
    import io

    buf = io.BytesIO()
    pl.DataFrame({"other": [1]}).write_ipc(buf)
    with pytest.raises(ValueError, match="dedup state"):
        again.load_bytes([buf.getvalue()])


class Collect(Sink):
    name = "collect"

    def __init__(self) -> None:
        self.results: list[dict] = []
        self.records = 0

    def write_results(self, batch: Any) -> None:
        self.results += [orjson.loads(x) for x in batch.lines]

    def write_records(self, records: pl.DataFrame, ids: pl.Series) -> None:
        self.records += records.height


def test_pipeline_counts_a_resent_record_once() -> None:
    sink = Collect()
    pipe = Pipeline(RULES, sink, clock=lambda: T0 + 100, dedup=True)
    pipe.step(chunk(["f-0", "f-10", "f-20"], [T0 + 0.1, T0 + 0.2, T0 + 0.3]))
    pipe.step(chunk(["f-10", "f-20", "f-30"], [T0 + 0.2, T0 + 0.3, T0 + 0.4]))  # a shipper's re-send + one new
    pipe.step(chunk(["f-40"], [T0 + 5]))
    assert pipe.stats.records == 5 and pipe.stats.duplicates == 2 and sink.records == 5
    assert [r["count"] for r in sink.results] == [4]
    without = Pipeline(RULES, Collect(), clock=lambda: T0 + 100)  # replay of files: no guard, no cost
    assert without.dedup is None


class Scripted(Source):
    """A source that hands out prepared chunks once each, then nothing."""

    name = "scripted"

    def __init__(self, chunks: list[Chunk]) -> None:
        self.chunks: Iterator[Chunk] = iter(chunks)

    def poll(self, timeout: float) -> Chunk | None:
        return next(self.chunks, None)


def test_the_guard_survives_a_restart_through_the_checkpoint(tmp_path: Path) -> None:
    opts = RunOptions(out_dir=tmp_path / "out", state_dir=tmp_path / "state", duration=1.0, idle_timeout=600)
    first = Runner(RULES, opts, source=Scripted([chunk(["f-0", "f-10"], [T0 + 0.1, T0 + 0.2], {"n": 1})]))
    assert first.run() == 0
    assert first.pipeline.stats.records == 2
    again = Runner(RULES, opts, source=Scripted([chunk(["f-10", "f-20"], [T0 + 0.2, T0 + 0.3], {"n": 2})]))
    assert again.run() == 0
    st = again.pipeline.stats
    assert (st.records, st.duplicates) == (3, 1), st.as_dict()
