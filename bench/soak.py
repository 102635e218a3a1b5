"""Soak: `lookout run` on the generator at a high rate for a long time, watching what it costs.

Reports, from outside the process: bytes written to disk (/proc/PID/io write_bytes) per second,
RSS, the store's file count and size over time; from the run's DEBUG commit lines: checkpoint
time per commit (p50/p99, engine encode + fsync), flush and store-upkeep time; first minute
against last minute; and bytes written against bytes kept (store + results + final checkpoint).

    .venv/bin/python bench/soak.py --rate 20000 --minutes 10 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMIT_RE = re.compile(
    r"^(\S+ \S+) DEBUG lookout.run: commit: flush ([\d.]+) ms, checkpoint ([\d.]+) ms \((\w+), (\d+) bytes\), "
    r"store upkeep ([\d.]+) ms, store files (\d+)"
)


def lookout_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "lookout"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "lookout"]


def dir_bytes(d: Path) -> int:
    total = 0
    for root, _, files in os.walk(d):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def proc_io(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def proc_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=20000)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--every", type=float, default=5.0, help="sampling interval, seconds")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="lookout-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    state, out = work / "state", work / "out"
    log_path = work / "run.log"
    duration = args.minutes * 60
    env = dict(os.environ, LOOKOUT_LOG_LEVEL="DEBUG")
    cmd = lookout_cmd() + [
        "run",
        "--rate",
        str(args.rate),
        "--duration",
        str(duration),
        "--no-view",
        "--state-dir",
        str(state),
        "--out",
        str(out),
        "--seed",
        "21",
    ]
    samples = []
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        t0 = time.monotonic()
        load0 = os.getloadavg()
        while proc.poll() is None:
            time.sleep(args.every)
            wb, rss = proc_io(proc.pid), proc_rss_mib(proc.pid)
            if wb is None:
                break
            store_dir = state / "store"
            samples.append(
                {
                    "t": round(time.monotonic() - t0, 1),
                    "write_bytes": wb,
                    "rss_mib": rss,
                    "store_files": sum(1 for _ in store_dir.glob("**/*.parquet")) if store_dir.exists() else 0,
                    "store_bytes": dir_bytes(store_dir) if store_dir.exists() else 0,
                    "load": os.getloadavg()[0],
                }
            )
        rc = proc.wait()
    text = log_path.read_text(errors="replace")
    commits = []
    for line in text.splitlines():
        m = COMMIT_RE.match(line)
        if m:
            at = time.mktime(time.strptime(m.group(1).split(",")[0], "%Y-%m-%d %H:%M:%S"))
            commits.append(
                {
                    "at": at,
                    "flush_ms": float(m.group(2)),
                    "ckpt_ms": float(m.group(3)),
                    "kind": m.group(4),
                    "bytes": int(m.group(5)),
                    "upkeep_ms": float(m.group(6)),
                    "files": int(m.group(7)),
                }
            )
    m = re.search(r"lookout run stopped: ([\d,]+) lines", text)
    lines = int(m.group(1).replace(",", "")) if m else None
    kept = {"store": dir_bytes(state / "store"), "results": dir_bytes(out), "checkpoint": dir_bytes(state / "checkpoint")}
    kept_total = sum(kept.values())
    written = samples[-1]["write_bytes"] if samples else 0
    elapsed = samples[-1]["t"] if samples else 0

    def window(first: bool) -> dict:
        """First or last 60 s of samples and commits (commits are about one per second)."""
        sel = [s for s in samples if (s["t"] <= 60 if first else s["t"] >= elapsed - 60)]
        cs = commits[:60] if first else commits[-61:-1]  # the very last commit is the stop's
        if len(sel) < 2:
            return {}
        dt = sel[-1]["t"] - sel[0]["t"]
        ck = [c["ckpt_ms"] for c in cs]
        return {
            "write_MBps": round((sel[-1]["write_bytes"] - sel[0]["write_bytes"]) / dt / 1e6, 2),
            "rss_mib": round(max(s["rss_mib"] or 0 for s in sel)),
            "store_files": max(s["store_files"] for s in sel),
            "ckpt_p50_ms": round(pct(ck, 50), 1),
            "ckpt_p99_ms": round(pct(ck, 99), 1),
            "ckpt_bytes_p50": int(pct([c["bytes"] for c in cs if c["kind"] == "delta"], 50)) if cs else None,
            "flush_p50_ms": round(pct([c["flush_ms"] for c in cs], 50), 1),
            "upkeep_p99_ms": round(pct([c["upkeep_ms"] for c in cs], 99), 1),
            "load_avg": round(statistics.mean(s["load"] for s in sel), 2),
        }

    def per_minute() -> list[dict]:
        """Minute by minute: what was written, checkpoint and upkeep times, files, RSS."""
        out, c0 = [], commits[0]["at"] if commits else 0
        for i in range(int(elapsed // 60) + 1):
            sel = [s for s in samples if i * 60 <= s["t"] < (i + 1) * 60]
            cs = [c for c in commits[:-1] if i * 60 <= c["at"] - c0 < (i + 1) * 60]
            if len(sel) < 2 or not cs:
                continue
            dt = sel[-1]["t"] - sel[0]["t"]
            out.append(
                {
                    "minute": i + 1,
                    "commits": len(cs),
                    "write_MBps": round((sel[-1]["write_bytes"] - sel[0]["write_bytes"]) / dt / 1e6, 2),
                    "ckpt_p50_ms": round(pct([c["ckpt_ms"] for c in cs], 50)),
                    "ckpt_max_ms": round(max(c["ckpt_ms"] for c in cs)),
                    "delta_kB_p50": round(pct([c["bytes"] for c in cs if c["kind"] == "delta"], 50) / 1e3),
                    "flush_p50_ms": round(pct([c["flush_ms"] for c in cs], 50)),
                    "upkeep_max_ms": round(max(c["upkeep_ms"] for c in cs)),
                    "store_files_max": max(s["store_files"] for s in sel),
                    "rss_mib_max": round(max(s["rss_mib"] or 0 for s in sel)),
                    "load_avg": round(statistics.mean(s["load"] for s in sel), 1),
                }
            )
        return out

    report = {
        "rate": args.rate,
        "seconds": elapsed,
        "exit": rc,
        "lines": lines,
        "records_per_s": round(lines / elapsed) if lines and elapsed else None,
        "load_avg_1m_at_start": round(load0[0], 2),
        "cpus": os.cpu_count(),
        "written_bytes": written,
        "written_MBps": round(written / elapsed / 1e6, 2) if elapsed else None,
        "kept_bytes": kept,
        "written_over_kept": round(written / kept_total, 2) if kept_total else None,
        "commits": len(commits),
        "snapshots": sum(1 for c in commits if c["kind"] == "snapshot"),
        "ckpt_ms_p50": round(pct([c["ckpt_ms"] for c in commits], 50), 1),
        "ckpt_ms_p99": round(pct([c["ckpt_ms"] for c in commits], 99), 1),
        "upkeep_ms_p99": round(pct([c["upkeep_ms"] for c in commits], 99), 1),
        "store_files_max": max((s["store_files"] for s in samples), default=0),
        "first_minute": window(True),
        "last_minute": window(False),
        "per_minute": per_minute(),
        "timeline": [
            {k: s[k] for k in ("t", "rss_mib", "store_files", "store_bytes")} | {"write_MB": round(s["write_bytes"] / 1e6, 1)}
            for s in samples[:: max(1, len(samples) // 20)]
        ],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
