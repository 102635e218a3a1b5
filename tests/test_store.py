"""The embedded store: counts and searches, merges, and recovery after a crash mid-merge."""

from __future__ import annotations

import shutil

import polars as pl

from lookout import store
from lookout.records import parse_chunk
from lookout.sources.generator import Generator, GeneratorConfig


def batch(n: int, seed: int) -> pl.DataFrame:
    g = Generator(GeneratorConfig(seed=seed), start=1_659_509_400.0)
    return parse_chunk(g.ndjson(n)).records


def test_write_merge_count_search(tmp_path):
    w = store.StoreWriter(tmp_path, compact_above=3)
    total = 0
    for i in range(8):
        b = batch(100, i)
        total += b.height
        w.add(b, [f"s:{i}:{j}" for j in range(b.height)])
        w.flush()
        w.mark_committed()
    assert len(list(tmp_path.glob("part-*.parquet"))) <= 4
    assert store.count(tmp_path) == total
    rows = store.search(tmp_path, store.Query.from_options(status="2xx"), limit=5)
    assert len(rows) == 5 and all(200 <= r["status"] <= 299 for r in rows)


def test_crash_mid_merge_keeps_every_record_once(tmp_path):
    w = store.StoreWriter(tmp_path, compact_above=100)
    for i in range(4):
        b = batch(50, i)
        w.add(b, [f"s:{i}:{j}" for j in range(b.height)])
        w.flush()
    n = store.count(tmp_path)
    parts = sorted(str(p) for p in tmp_path.glob("part-*.parquet"))
    # a merge wrote its file but crashed before deleting the parts
    keep = tmp_path / "keep"
    keep.mkdir()
    for p in parts:
        shutil.copy(p, keep)
    w._merge(parts)
    for p in keep.iterdir():
        shutil.copy(p, tmp_path)
    assert store.count(tmp_path) == 2 * n  # duplicates visible until the next start
    store.StoreWriter(tmp_path)
    assert store.count(tmp_path) == n


def test_drop_after_checkpoint(tmp_path):
    w = store.StoreWriter(tmp_path)
    b = batch(10, 1)
    w.add(b, [str(i) for i in range(b.height)])
    w.flush()
    seq = w.mark_committed()
    w.add(b, [str(i) for i in range(b.height)])
    w.flush()
    assert store.count(tmp_path) == 2 * b.height
    w2 = store.StoreWriter(tmp_path)
    w2.drop_after(seq)
    assert store.count(tmp_path) == b.height
