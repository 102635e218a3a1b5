"""Benchmark of the embedded engine: `lookout replay` over 2M seed-format records, four default rules.

Generates the input once (bench/data/, not committed), runs replay as a subprocess a few times
and reports the best and median events/s and the peak memory (max RSS) of the run.

    .venv/bin/python bench/run.py [--records 2000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOOKOUT = str(Path(sys.executable).parent / "lookout")


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


def ensure_input(n: int) -> Path:
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    path = data / f"seed-{n}.ndjson"
    if not path.exists():
        subprocess.run([LOOKOUT, "generate", str(n), "--out", str(path)], check=True)
    return path


def run_once(path: Path, out: Path) -> tuple[float, dict, float]:
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run([LOOKOUT, "replay", str(path), "--out", str(out), "--json", "--no-progress"],
                       check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, json.loads(p.stdout), max(rss, before) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    path = ensure_input(args.records)
    out = HERE / "out"
    walls, internal, rss = [], [], 0.0
    summary = {}
    for _ in range(args.runs):
        wall, summary, peak = run_once(path, out)
        walls.append(wall)
        internal.append(summary["events_per_second"])
        rss = max(rss, peak)
    n = summary["lines"]
    print(f"machine: {machine()}")
    print(f"input: {n:,} records, {path.stat().st_size / 2**20:.0f} MiB; results: {summary['results']}")
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| events/s, whole command (best of {args.runs}) | {n / min(walls):,.0f} |")
    print(f"| events/s, whole command (median) | {n / statistics.median(walls):,.0f} |")
    print(f"| events/s, pipeline only (best; excludes interpreter start) | {max(internal):,} |")
    print(f"| wall time (best) | {min(walls):.2f} s |")
    print(f"| peak memory (max RSS) | {rss:,.0f} MiB |")


if __name__ == "__main__":
    main()
