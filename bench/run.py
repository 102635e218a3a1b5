"""Benchmark of the embedded engine on clean and on messy input, as ratios to a `json.loads` loop.

For each input (the clean generated file and the messy one of bench/messy.py, 2M records each by
default, made once under bench/data/), in one run: a plain `json.loads` loop over the file (the
yardstick: what any Python consumer pays just to read the lines), then `lookout replay` with the
four default rules as a subprocess, best of `--runs`, with its peak memory (PSS summed over its
processes: replay and its parse processes, plus the chunk files in flight between them on tmpfs).
Then the
same for `lookout run --kafka` (bench/kafka_bench.py) unless `--no-kafka`. The load average is
printed: on a shared machine the ratios, measured side by side, are the figures to compare.

    .venv/bin/python bench/run.py [--records 2000000] [--runs 3] [--kafka-records 1000000] [--no-kafka]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
LOOKOUT = str(Path(sys.executable).parent / "lookout")

from messy import generate_messy  # noqa: E402


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}, {platform.system()}"


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def ensure_input(kind: str, n: int) -> Path:
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    path = data / f"{'seed' if kind == 'clean' else 'messy'}-{n}.ndjson"
    if not path.exists():
        if kind == "clean":
            subprocess.run([LOOKOUT, "generate", str(n), "--out", str(path)], check=True)
        else:
            generate_messy(path, n)
    return path


def json_loads_loop(path: Path) -> float:
    """Lines per second of the yardstick: read the file line by line and json.loads each."""
    n = 0
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            try:
                json.loads(line)
            except ValueError:  # a broken line costs the loop what it costs; it is still a line
                pass
            n += 1
    return n / (time.perf_counter() - t0)


def tree_pss_mib(pid: int) -> float:
    """Proportional set size of a process and its descendants (shared library pages counted once)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(k) for k in f.read().split()]
        except OSError:
            pass
    return total / 1024


def exchange_mib(pid: int) -> float:
    """Chunk and result files in flight in the parse pool's exchange directory (tmpfs: memory that
    no process's PSS shows, lookout.parsepool)."""
    import glob

    total = 0
    for base in ("/dev/shm", "/tmp"):
        for f in glob.glob(f"{base}/lookout-parse-{pid}-*/*"):
            try:
                total += os.stat(f).st_size
            except OSError:
                pass
    return total / 2**20


def run_replay(path: Path, out: Path) -> tuple[float, dict, float]:
    """Wall seconds, replay's --json summary and the peak memory (MiB) of the command: the sum over
    its process and its parse processes (PSS) plus the chunk files in flight between them on
    tmpfs, sampled every 50 ms."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [LOOKOUT, "replay", str(path), "--out", str(out), "--json", "--no-progress"], stdout=subprocess.PIPE, text=True
    )
    peak = [0.0]

    def sample() -> None:
        while p.poll() is None:
            peak[0] = max(peak[0], tree_pss_mib(p.pid) + exchange_mib(p.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout = p.stdout.read() if p.stdout else ""
    code = p.wait()
    sampler.join()
    wall = time.perf_counter() - t0
    if code not in (0, 3):
        raise SystemExit(f"replay failed: exit {code}")
    return wall, json.loads(stdout), peak[0]


def bench_replay(kind: str, path: Path, runs: int) -> dict:
    yard = json_loads_loop(path)
    best: tuple[float, dict] | None = None
    rss = 0.0
    for _ in range(runs):
        wall, summary, peak = run_replay(path, HERE / "out")
        rss = max(rss, peak)
        if best is None or summary["events_per_second"] > best[1]["events_per_second"]:
            best = (wall, summary)
    assert best is not None
    wall, summary = best
    n = summary["lines"]
    return {
        "input": kind,
        "lines": n,
        "rejected": summary["rejected"],
        "json_loads_per_s": round(yard),
        "replay_per_s": summary["events_per_second"],
        "replay_ratio": summary["events_per_second"] / yard,
        "whole_command_per_s": round(n / wall),
        "peak_rss_mib": round(rss),
        "load": load(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kafka-records", type=int, default=1_000_000)
    ap.add_argument("--no-kafka", action="store_true")
    args = ap.parse_args()
    print(f"machine: {machine()}; load average before: {load()}")
    rows = [bench_replay(kind, ensure_input(kind, args.records), args.runs) for kind in ("messy", "clean")]
    print()
    print(
        f"replay, {args.records:,} records, four default rules (best of {args.runs}; ratio = replay / json.loads loop, same run)"
    )
    print()
    print("| input | json.loads loop | replay (pipeline) | ratio | whole command | peak memory (PSS + tmpfs) | rejected | load |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['input']} | {r['json_loads_per_s']:,}/s | {r['replay_per_s']:,}/s | **{r['replay_ratio']:.2f}x** "
            f"| {r['whole_command_per_s']:,}/s | {r['peak_rss_mib']:,} MiB | {r['rejected']:,} | {r['load']} |"
        )
    if args.no_kafka:
        return
    from kafka_bench import bench_kafka

    print()
    print(
        f"run --kafka, {args.kafka_records:,} records through the Tansu test broker (3 partitions), until every result is on "
        "the goal topics; replay of the same file and a json.loads loop in the same run"
    )
    print()
    print("| input | json.loads loop | replay | run --kafka (after start-up) | kafka / replay | kafka / json.loads | load avg |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("messy", "clean"):
        src = ensure_input(kind, args.records)
        part = HERE / "data" / f"{src.stem}-head{args.kafka_records}.ndjson"
        if not part.exists():
            with open(src, "rb") as f, open(part, "wb") as g:
                for i, line in enumerate(f):
                    if i >= args.kafka_records:
                        break
                    g.write(line)
        yard = json_loads_loop(part)
        k = bench_kafka(part, None)
        kps = k["events_per_second_after_startup"] or k["events_per_second_end_to_end"]
        rps = k["replay_events_per_second"]
        ok = "" if k["results_match_replay_counts"] else " (results differ from replay!)"
        print(f"| {kind} | {yard:,.0f}/s | {rps:,}/s | {kps:,}/s{ok} | **{kps / rps:.2f}** | {kps / yard:.2f}x | {load()} |")


if __name__ == "__main__":
    main()
