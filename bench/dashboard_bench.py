"""Does an open dashboard slow `lookout run` down? (issue 11: it must not, at 100k records/s)

Two measures, each with the dashboard closed (no feed, no server) and open (feed updated every
step, the server's event stream read by a client in another process, as a browser would):

- backlog: `run --tail` over a pre-written log of N records, wall time until all are processed
  (the highest rate the loop reaches);
- paced: the generator source at --rate records/s for --seconds; records processed and the
  process's CPU time (the pipeline keeps up either way; the question is what the feed costs).

Reps alternate closed/open so the machine's other load hits both alike; medians are printed.

    PYTHONPATH=src .venv/bin/python bench/dashboard_bench.py [--records 1000000] [--rate 100000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lookout.rules import load_rules  # noqa: E402
from lookout.runner import Runner, RunOptions  # noqa: E402
from lookout.sources.generator import generate_file  # noqa: E402
from lookout.sources.generator_source import GeneratorSource  # noqa: E402


def start_dashboard(runner: Runner) -> tuple[object, subprocess.Popen]:
    from starlette.applications import Starlette

    from lookout.dashboard.live import live_routes
    from tests.fixtures.dashboard import serve_app_in_thread

    url, server, _ = serve_app_in_thread(Starlette(routes=live_routes(runner)))
    reader = subprocess.Popen([sys.executable, "-c", READER, url + "api/events"], stdout=subprocess.PIPE, text=True)
    return server, reader


# an event-stream client in its own process: reads everything, prints the byte count on SIGTERM
READER = """
import signal, sys, urllib.request
n = 0
def done(*_):
    print(n, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
with urllib.request.urlopen(sys.argv[1]) as r:
    while True:
        b = r.read1(65536)
        if not b:
            break
        n += len(b)
done()
"""


def instrument(runner: Runner) -> dict[str, float]:
    """CPU seconds spent in the feed's step (run loop thread) and snapshot (server thread)."""
    cost = {"step": 0.0, "snapshot": 0.0, "steps": 0}
    feed = runner.feed
    if feed is None:
        return cost
    step, snap = feed.step, feed.snapshot

    def timed_step(*a, **k):  # noqa: ANN002, ANN003, ANN202
        t = time.thread_time()
        step(*a, **k)
        cost["step"] += time.thread_time() - t
        cost["steps"] += 1

    def timed_snapshot():  # noqa: ANN202
        t = time.thread_time()
        try:
            return snap()
        finally:
            cost["snapshot"] += time.thread_time() - t

    feed.step = timed_step  # type: ignore[method-assign]
    feed.snapshot = timed_snapshot  # type: ignore[method-assign]
    return cost


def one(mode: str, dashboard: bool, args: argparse.Namespace, log: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        if mode == "backlog":
            opts = RunOptions(tail_path=log, out_dir=Path(d) / "out", state_dir=Path(d) / "state", view=False, idle_timeout=600)
            runner = Runner(load_rules(None), opts)
        else:
            opts = RunOptions(out_dir=Path(d) / "out", state_dir=Path(d) / "state", view=False, rate=args.rate)
            runner = Runner(load_rules(None), opts, source=GeneratorSource(args.rate, seed=1))
        server = reader = None
        if dashboard:
            server, reader = start_dashboard(runner)
        cost = instrument(runner)
        cpu0 = time.process_time()
        t0 = time.monotonic()
        th = threading.Thread(target=runner.run)
        th.start()
        st = runner.pipeline.stats
        if mode == "backlog":
            while st.records < args.records:
                time.sleep(0.01)
        else:
            time.sleep(args.seconds)
        wall = time.monotonic() - t0
        records = st.records
        cpu = time.process_time() - cpu0
        runner.stop_requested = True
        th.join()
        stream_bytes = 0
        if reader is not None:
            reader.terminate()
            out, _ = reader.communicate()
            stream_bytes = int(out.strip() or 0)
            server.should_exit = True  # type: ignore[attr-defined]
        return {
            "records_per_s": records / wall,
            "cpu_s": cpu,
            "wall_s": wall,
            "stream_kib_per_s": stream_bytes / 1024 / wall,
            "feed_step_cpu_s": cost["step"],
            "snapshot_cpu_s": cost["snapshot"],
            "steps": cost["steps"],
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=100_000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", choices=["backlog", "paced"], default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "access.log"
        generate_file(str(log), args.records, rate=args.rate, start=1_659_509_400.0, seed=7)
        for mode in ("backlog", "paced"):
            if args.only and mode != args.only:
                continue
            res: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            for _ in range(args.reps):
                for dash in (False, True):
                    r = one(mode, dash, args, log)
                    res[dash].append(r)
                    print(
                        f"{mode:8} dashboard {'open  ' if dash else 'closed'} {r['records_per_s']:>10,.0f} records/s  "
                        f"cpu {r['cpu_s']:6.1f} s  wall {r['wall_s']:5.1f} s  stream {r['stream_kib_per_s']:.1f} KiB/s  "
                        f"feed.step {r['feed_step_cpu_s'] * 1000:.0f} ms cpu over {r['steps']} steps, "
                        f"snapshots {r['snapshot_cpu_s'] * 1000:.0f} ms cpu",
                        flush=True,
                    )
            for dash in (False, True):
                rs = res[dash]
                print(
                    f"== {mode} dashboard {'open' if dash else 'closed'}: median "
                    f"{statistics.median(r['records_per_s'] for r in rs):,.0f} records/s, "
                    f"cpu {statistics.median(r['cpu_s'] for r in rs):.1f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
