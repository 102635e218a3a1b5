"""The embedded store: hourly partitions, bounded merges, retention, pruned queries, and
recovery after a crash mid-merge or between checkpoints."""

from __future__ import annotations

import shutil
import time

import polars as pl

from lookout import store
from lookout.records import parse_chunk
from lookout.sources.generator import Generator, GeneratorConfig

HOUR = store.HOUR_US


def batch(n: int, seed: int, start: float = 1_659_509_400.0, rate: float = 100.0) -> pl.DataFrame:
    g = Generator(GeneratorConfig(seed=seed, rate=rate, burst_every=0), start=start)
    return parse_chunk(g.ndjson(n)).records


def add(w: store.StoreWriter, b: pl.DataFrame, tag: str) -> None:
    w.add(b, [f"{tag}:{j}" for j in range(b.height)])


def parquet_files(d):
    return sorted(d.glob("**/part-*.parquet"))


def test_write_merge_count_search(tmp_path):
    w = store.StoreWriter(tmp_path, fan_in=3)
    total = 0
    for i in range(8):
        b = batch(100, i, start=1_659_509_400.0 + i)
        total += b.height
        add(w, b, f"s{i}")
        w.flush()
        w.mark_committed()
    assert len(parquet_files(tmp_path)) <= 4 and w.merges >= 2
    assert store.count(tmp_path) == total
    rows = store.search(tmp_path, store.Query.from_options(status="2xx"), limit=5)
    assert len(rows) == 5 and all(200 <= r["status"] <= 299 for r in rows)


def test_partitions_by_hour_of_event_time(tmp_path):
    w = store.StoreWriter(tmp_path)
    b = batch(2000, 1, start=1_659_510_000.0, rate=0.25)  # 8000 s from 07:00: three hours
    add(w, b, "x")
    w.flush()
    hours = sorted(p.name for p in tmp_path.iterdir())
    assert hours == ["2022-08-03T07", "2022-08-03T08", "2022-08-03T09"]
    for d in tmp_path.iterdir():
        h = store._hour_of(d.name)
        ts = pl.read_parquet(list(d.glob("*.parquet"))).get_column("ts")
        assert ts.min() >= h * HOUR and ts.max() < (h + 1) * HOUR


def test_file_count_bounded_and_merges_never_rewrite_history(tmp_path):
    """600 commits: files stay few, each merge reads a bounded amount, every record stays once."""
    target = 200_000
    w = store.StoreWriter(tmp_path, fan_in=8, target_bytes=target, cold_after=50)
    total, most_files = 0, 0
    start = 1_659_510_000.0
    biggest_merge = 0
    orig_merge = w._merge

    def spy(d, parts):
        nonlocal biggest_merge
        biggest_merge = max(biggest_merge, sum(p.size for p in parts))
        orig_merge(d, parts)

    w._merge = spy
    for i in range(600):
        b = batch(200, i, start=start + i * 12, rate=200 / 12)  # 12 s of event time per commit: 2 hours in all
        total += b.height
        add(w, b, f"c{i}")
        w.flush()
        w.mark_committed()
        most_files = max(most_files, len(parquet_files(tmp_path)))
    assert store.count(tmp_path) == total
    ids = pl.read_parquet(parquet_files(tmp_path)).get_column("id")
    assert ids.n_unique() == total
    assert most_files <= 40, most_files
    assert biggest_merge < 2 * target + 50_000, biggest_merge  # never the whole history (≈ 2.5 MB here)
    # the first hour went cold: its small files were merged, at most one small file is left
    first = sorted(tmp_path.iterdir())[0]
    sizes = [p.stat().st_size for p in first.glob("*.parquet")]
    assert sum(1 for x in sizes if x < target // 4) <= 1, sizes
    assert len(sizes) <= sum(sizes) // (target // 4) + 1, sizes


def test_retention_deletes_whole_old_hours_only(tmp_path):
    w = store.StoreWriter(tmp_path, retention_us=3 * HOUR)
    start = 1_659_510_000.0  # 2022-08-03T07:00
    seen = []
    for i in range(10):  # one flush per hour, 10 hours
        b = batch(100, i, start=start + i * 3600, rate=0.05)
        seen.append(b)
        add(w, b, f"h{i}")
        w.flush()
        w.mark_committed()
    allrecs = pl.concat(seen)
    reference = int(seen[-1].get_column("ts").median())
    kept_from = (reference - 3 * HOUR) // HOUR  # the first hour that ends after reference - 3h
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [store.hour_name(h) for h in range(kept_from, reference // HOUR + 1)]
    assert store.count(tmp_path) == allrecs.filter(pl.col("ts") >= kept_from * HOUR).height


def test_retention_ignores_a_clock_in_the_future_and_keeps_a_replay_of_old_traffic(tmp_path):
    w = store.StoreWriter(tmp_path, retention_us=24 * HOUR)
    old = batch(500, 1, start=1_659_510_000.0, rate=1.0)  # 2022, years before the wall clock
    future = old.head(3).with_columns(ts=pl.lit(int((time.time() + 50 * 365 * 86400) * 1e6)))
    add(w, pl.concat([old, future]), "o")
    w.flush()
    w.mark_committed()
    assert store.count(tmp_path) == old.height + 3


def test_queries_prune_hours_and_stay_exact(tmp_path):
    w = store.StoreWriter(tmp_path)
    b = batch(3000, 2, start=1_659_510_000.0, rate=0.5)  # 6000 s
    add(w, b, "q")
    w.flush()
    since = 1_659_510_000 * 1_000_000 + 3_700 * 1_000_000
    until = since + 1_200 * 1_000_000
    files = store.list_parts(tmp_path, since, until)
    assert {p.hour for p in files} == {since // HOUR, (until - 1) // HOUR}  # other hours not even opened
    want = b.filter((pl.col("ts") >= since) & (pl.col("ts") < until)).height
    assert store.count(tmp_path, since, until) == want > 0
    rows = store.search(tmp_path, store.Query(since_us=since, until_us=until), limit=10_000)
    assert len(rows) == want


def test_crash_mid_merge_keeps_every_record_once(tmp_path):
    w = store.StoreWriter(tmp_path, fan_in=100)
    for i in range(4):
        add(w, batch(50, i), f"s{i}")
        w.flush()
    w.mark_committed()
    n = store.count(tmp_path)
    hour_dir = next(tmp_path.iterdir())
    parts = store._parts_in(hour_dir, store._hour_of(hour_dir.name))
    # a merge wrote its file but crashed before deleting the parts
    keep = tmp_path.parent / "keep"
    keep.mkdir()
    for p in parts:
        shutil.copy(p.path, keep)
    w._merge(hour_dir, parts)
    for p in keep.iterdir():
        shutil.copy(p, hour_dir)
    assert len(list(hour_dir.glob("*.parquet"))) == 5
    assert store.count(tmp_path) == n  # readers ignore the covered parts
    store.StoreWriter(tmp_path)
    assert len(list(hour_dir.glob("*.parquet"))) == 1 and store.count(tmp_path) == n


def test_drop_after_checkpoint(tmp_path):
    w = store.StoreWriter(tmp_path)
    b = batch(10, 1)
    add(w, b, "a")
    w.flush()
    seq = w.mark_committed()
    add(w, b, "b")
    w.flush()
    later = batch(10, 1, start=1_659_600_000.0)  # an hour that only uncommitted data created
    add(w, later, "c")
    w.flush()
    assert store.count(tmp_path) == 3 * b.height
    w2 = store.StoreWriter(tmp_path)
    w2.drop_after(seq)
    assert store.count(tmp_path) == b.height
    assert len(list(tmp_path.iterdir())) == 1


def test_legacy_flat_files_are_still_read(tmp_path):
    b = batch(20, 3)
    b.drop("line").with_columns(id=pl.lit("legacy")).write_parquet(tmp_path / "part-000000000001-000000000001.parquet")
    w = store.StoreWriter(tmp_path)
    assert w.seq == 1
    add(w, b, "n")
    w.flush()
    assert store.count(tmp_path) == 2 * b.height


# ---------------------------------------------------------------- issue 9: the four optional fields


def _line(i: int, **extra) -> bytes:
    import orjson

    rec = {"client_ip": f"10.0.0.{i % 250}", "status": 404 if i % 2 else 200, "host": "h", "@timestamp": 1_659_509_400 + i}
    return orjson.dumps({**rec, **extra})


def _old_part(w: store.StoreWriter, n: int, tag: str) -> None:
    """A flush as a store written before the fields existed holds it: no path/user_agent/referer/bytes columns."""
    b = parse_chunk(b"\n".join(_line(i) for i in range(n)) + b"\n").records
    old = b.drop("path", "user_agent", "referer", "bytes")
    w.pending.append(old.drop("line").with_columns(id=pl.Series("id", [f"{tag}:{j}" for j in range(n)])))
    w.flush()
    w.mark_committed()


def test_new_fields_are_stored_and_searched_by_path_prefix_beside_older_files(tmp_path):
    w = store.StoreWriter(tmp_path, fan_in=2)
    _old_part(w, 10, "old")
    assert store.search(tmp_path, store.Query.from_options(path="/api/")) == []  # no file has the column yet
    lines = [
        _line(i, path=p, bytes=str(100 * i), user_agent="<b>ua</b>", referer="-")
        for i, p in enumerate(["/api/v1?x=1", "/api/v2", "/static/a.css", "/apix", "-"])
    ]
    add(w, parse_chunk(b"\n".join(lines) + b"\n").records, "new")
    w.flush()
    w.mark_committed()
    for _ in range(3):  # merges old and new files into one
        w.flush()
        w.mark_committed()
    assert w.merges >= 1 and len(parquet_files(tmp_path)) == 1
    assert store.count(tmp_path) == 15
    rows = store.search(tmp_path, store.Query.from_options(path="/api/"), limit=10)
    assert sorted(r["path"] for r in rows) == ["/api/v1?x=1", "/api/v2"]
    assert {r["bytes"] for r in rows} == {0, 100} and all(r["user_agent"] == "<b>ua</b>" and "referer" not in r for r in rows)
    assert len(store.search(tmp_path, store.Query.from_options(status="4xx"), limit=100)) == 7  # old rows: no new keys
    old = [r for r in store.search(tmp_path, store.Query(), limit=100) if r["id"].startswith("old")]
    assert len(old) == 10 and not {"path", "bytes", "user_agent", "referer"} & {k for r in old for k in r}


def test_search_path_on_the_command_line(tmp_path, lookout_cmd):
    import subprocess

    import orjson

    w = store.StoreWriter(tmp_path / "store")
    _old_part(w, 3, "old")
    lines = [_line(i, path=p) for i, p in enumerate(["/a/1", "/a/2", "/b"])]
    add(w, parse_chunk(b"\n".join(lines) + b"\n").records, "new")
    w.flush()
    out = subprocess.run(
        lookout_cmd + ["search", "--store", str(tmp_path / "store"), "--path", "/a/"], capture_output=True, check=True, timeout=60
    ).stdout
    assert sorted(orjson.loads(x)["path"] for x in out.splitlines()) == ["/a/1", "/a/2"]
