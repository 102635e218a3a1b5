"""Benchmark: the core benchmark input through `lookout replay`, `lookout spark` and the seed's own
Spark design (four queries, `window()`), same machine, same run; prints a markdown table and
checks that lookout spark's results equal replay's.

    .venv/bin/python bench/spark_bench.py [--records 1000000] [--master local[2]] [--rounds 3] [--keep DIR]

Each is timed end to end as a user runs it (a fresh process each, Spark's JVM start included).
The seed design (its README: goals 1-4 as four streaming aggregations with F.window, update
mode) is run here on the same staged input with a 10 s watermark and a no-op sink, in one
process, the four queries one after another; its timestamp parse is the seed's idea on Spark 4
(`@timestamp` cast to double, then to timestamp: `from_unixtime` fails there).
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
BEFORE = 4_000  # records/s of lookout spark --input when issue 13 was filed (its "today")


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    el = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return el, p.stdout


def same_results(a: Path, b: Path) -> list[str]:
    diff = []

    def lines(p: Path) -> list[str]:  # dead letters without `line` (Spark's file source has no line numbers)
        if p.name != "rejected.jsonl":
            return sorted(p.read_text().splitlines())
        return sorted(json.dumps({k: v for k, v in json.loads(x).items() if k != "line"}) for x in p.read_text().splitlines())

    for f in sorted(b.glob("*.jsonl")):  # lookout spark's files: each rule's, and rejected.jsonl
        if lines(f) != lines(a / f.name):
            diff.append(f.name)
    return diff


def seed_design(data: str, master: str, work: str) -> None:
    """The seed's four Spark aggregations (its README), each a streaming query over the input
    staged as lookout spark stages it (32 MB files, FILES_PER_BATCH a micro-batch: the same
    batches as lookout spark)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from lookout.spark.app import FILES_PER_BATCH, _stage_inputs
    from lookout.spark.session import build_session

    stage = Path(work) / "seed-input"
    shutil.rmtree(stage, ignore_errors=True)
    _stage_inputs([data], stage)
    spark = build_session(master)
    schema = T.StructType(
        [
            T.StructField(f, T.StringType())
            for f in ("server", "client_ip", "method", "status", "request_time", "host", "country", "@timestamp")
        ]
    )

    def records():  # noqa: ANN202
        df = spark.readStream.option("maxFilesPerTrigger", FILES_PER_BATCH).text(str(stage))
        df = df.select(F.from_json("value", schema).alias("j")).select("j.*")
        df = df.withColumn("ts", F.expr("try_cast(`@timestamp` AS DOUBLE)").cast("timestamp"))
        df = df.withColumn("status", F.expr("try_cast(status AS INT)"))
        df = df.withColumn("request_time", F.expr("try_cast(request_time AS DOUBLE)"))
        return df.withWatermark("ts", "10 seconds")

    goals = [
        records().groupby(F.window("ts", "20 seconds", "1 seconds"), F.col("client_ip")).count().filter("count > 10"),
        records()
        .filter("status between 400 and 499")
        .groupby(F.window("ts", "30 seconds", "1 seconds"), F.col("host"))
        .count()
        .filter("count > 15"),
        records().filter("status between 200 and 299").groupby(F.window("ts", "1 minutes"), F.col("country")).count(),
        records().groupby(F.window("ts", "1 minutes"), F.col("host")).avg("request_time"),
    ]
    for i, g in enumerate(goals):
        ck = Path(work) / f"seed-ck-{i}"
        shutil.rmtree(ck, ignore_errors=True)  # a kept checkpoint would skip every file already read
        q = (
            g.writeStream.outputMode("update")
            .format("noop")
            .option("checkpointLocation", str(ck))
            .trigger(availableNow=True)
            .start()
        )
        q.awaitTermination()
    shutil.rmtree(stage, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--keep", default=None, help="Work directory to keep (default: a temporary one).")
    ap.add_argument("--no-seed", action="store_true", help="Skip the seed design (it is slow).")
    ap.add_argument("--rounds", type=int, default=1, help="Alternating rounds; the best time of each engine is reported.")
    ap.add_argument("--seed-design", nargs=3, metavar=("DATA", "MASTER", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.seed_design:
        seed_design(*args.seed_design)
        return
    work = Path(args.keep or tempfile.mkdtemp(prefix="lookout-spark-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"bench-{args.records}.ndjson"
    if not data.exists():
        run([str(BIN / "lookout"), "generate", str(args.records), "--out", str(data)])
    try:
        times: dict[str, list[float]] = {"replay": [], "spark": [], "seed": []}
        loads: list[float] = []
        spark_stats: dict = {}
        for rnd in range(args.rounds):  # alternating, so a load spike hits each engine alike
            loads.append(os.getloadavg()[0])
            t, _ = run([str(BIN / "lookout"), "replay", str(data), "--out", str(work / "replay"), "--json", "--no-progress"])
            times["replay"].append(t)
            t, out = run(
                [
                    str(BIN / "lookout"),
                    "spark",
                    "--input",
                    str(data),
                    "--out",
                    str(work / "spark"),
                    "--master",
                    args.master,
                    "--json",
                ]
            )
            times["spark"].append(t)
            spark_stats = json.loads(out.strip().splitlines()[-1])
            if not args.no_seed:
                t, _ = run([sys.executable, __file__, "--seed-design", str(data), args.master, str(work)])
                times["seed"].append(t)
            print(
                f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items() if v), file=sys.stderr, flush=True
            )
        diff = same_results(work / "replay", work / "spark")
        n = args.records
        t_replay, t_spark = min(times["replay"]), min(times["spark"])
        t_seed = min(times["seed"]) if times["seed"] else None
        print(
            f"\n{n:,} records ({data.stat().st_size / 1e6:.0f} MB), {os.cpu_count()} cores "
            f"(load average at each round's start: {', '.join(f'{x:.1f}' for x in loads)}), Spark master {args.master}, "
            f"best of {args.rounds} alternating round(s)\n"
        )
        print("| engine | wall time (each round) | records/s (best) | vs replay |")
        print("|---|---:|---:|---:|")

        def each(k: str) -> str:
            return " / ".join(f"{x:.1f}" for x in times[k]) + " s"

        print(f"| lookout replay (embedded) | {each('replay')} | {n / t_replay:,.0f} | 1.0x |")
        print(f"| lookout spark (local mode) | {each('spark')} | {n / t_spark:,.0f} | {t_spark / t_replay:.1f}x slower |")
        if t_seed is not None:
            print(
                f"| seed design: 4 queries, window(), update (local mode) | {each('seed')} | {n / t_seed:,.0f} | "
                f"{t_seed / t_replay:.1f}x slower |"
            )
            ratios = " / ".join(f"{b / a:.1f}" for a, b in zip(times["spark"], times["seed"], strict=True))
            print(f"\nlookout spark vs the seed design: {t_seed / t_spark:.1f}x faster (each round: {ratios}).")
        print(f"lookout spark vs issue 13's {BEFORE:,}/s: {n / t_spark / BEFORE:.1f}x.")
        print(f"micro-batches: {spark_stats['batches']}, seconds each (last round): {spark_stats.get('batch_seconds')}.")
        print(
            f"Spark time inside the process (session start included, last round): {spark_stats['seconds']:.1f} s; "
            f"results {'identical' if not diff else 'DIFFER in ' + ', '.join(diff)}."
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
