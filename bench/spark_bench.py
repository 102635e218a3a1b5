"""Benchmark: the core benchmark input through `lookout replay` and through `lookout spark`
(Spark local mode), same machine, same run; prints a markdown table and checks the results agree.

    .venv/bin/python bench/spark_bench.py [--records 2000000] [--master local[*]] [--keep DIR]

Both are timed end to end as a user runs them (a fresh process each, Spark's JVM start
included); Spark's own query time (first batch to last) is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    el = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return el, p.stdout


def same_results(a: Path, b: Path) -> list[str]:
    diff = []
    for f in sorted(a.glob("*.jsonl")):
        if f.name == "rejected.jsonl":
            continue
        if sorted(f.read_text().splitlines()) != sorted((b / f.name).read_text().splitlines()):
            diff.append(f.name)
    return diff


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--keep", default=None, help="Work directory to keep (default: a temporary one).")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="lookout-spark-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"bench-{args.records}.ndjson"
    if not data.exists():
        run([str(BIN / "lookout"), "generate", str(args.records), "--out", str(data)])
    try:
        t_replay, _ = run([str(BIN / "lookout"), "replay", str(data), "--out", str(work / "replay"), "--json", "--no-progress"])
        t_spark, out = run([str(BIN / "lookout"), "spark", "--input", str(data), "--out", str(work / "spark"),
                            "--master", args.master, "--json"])
        spark_stats = json.loads(out.strip().splitlines()[-1])
        diff = same_results(work / "replay", work / "spark")
        n = args.records
        cores = os.cpu_count()
        print(f"\n{n:,} records ({data.stat().st_size / 1e6:.0f} MB), {cores} cores, Spark master {args.master}\n")
        print("| engine | wall time | records/s | vs replay |")
        print("|---|---:|---:|---:|")
        print(f"| lookout replay (embedded) | {t_replay:.1f} s | {n / t_replay:,.0f} | 1.0x |")
        print(f"| lookout spark (local mode) | {t_spark:.1f} s | {n / t_spark:,.0f} | {t_spark / t_replay:.1f}x slower |")
        print(f"\nSpark time inside the process (session start included): {spark_stats['seconds']:.1f} s; "
              f"results {'identical' if not diff else 'DIFFER in ' + ', '.join(diff)}.")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
