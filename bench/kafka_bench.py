"""End-to-end events/s through a real Kafka-protocol broker (Tansu, in memory).

A backlog of N records (`lookout generate N`) is produced to a 3-partition `test-inter` first;
then `lookout run --kafka` is started and timed until every result that `lookout replay` finds
in the same records has arrived on the goal topics (read back from the broker), or until no
result has arrived for `QUIET_S` seconds (the results then differ from replay's, and the output
says so). Prints JSON. `--input FILE` benchmarks a given file (bench/run.py passes the messy one).

    .venv/bin/python bench/kafka_bench.py [--records 2000000] [--input FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.kafka import TansuBroker  # noqa: E402

BIN = Path(sys.executable).parent
LOOKOUT = str(BIN / "lookout")
QUIET_S = 15.0


def produce_backlog(bootstrap: str, path: Path, topic: str) -> float:
    t0 = time.monotonic()
    subprocess.run([LOOKOUT, "produce", "--kafka", bootstrap, "--topic", topic, "--input", str(path)], check=True)
    return time.monotonic() - t0


def count_results(bootstrap: str, expected: dict[str, int], deadline: float) -> tuple[dict[str, int], float]:
    """Read the goal topics until each holds its expected count; return counts and arrival time."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False})
    while True:  # `lookout run` creates the goal topics once it has started (slow on a loaded machine)
        md = c.list_topics(timeout=5)
        if all(t in md.topics and md.topics[t].partitions for t in expected):
            break
        if time.monotonic() > deadline:
            raise SystemExit("the goal topics never appeared: did `lookout run` start?")
        time.sleep(0.2)
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in expected for p in md.topics[t].partitions])
    got = dict.fromkeys(expected, 0)
    done_at = time.monotonic()
    seen_any = False
    while got != expected and time.monotonic() < deadline:
        if seen_any and time.monotonic() - done_at > QUIET_S:
            break
        for m in c.consume(10_000, 0.1):
            if m.error() is None:
                got[m.topic()] += 1
                done_at = time.monotonic()
                seen_any = True
    c.close()
    return got, done_at


def bench_kafka(data: Path, keep: str | None) -> dict:
    """Replay `data`, then the same lines through the broker and `run --kafka`; figures as a dict."""
    work = Path(keep or tempfile.mkdtemp(prefix="lookout-kafka-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    with open(data, "rb") as f:
        records = sum(1 for _ in f)
    rep = subprocess.run(
        [LOOKOUT, "replay", str(data), "--out", str(work / "replay"), "--json", "--no-progress"], capture_output=True, text=True
    )
    replay_stats = json.loads(rep.stdout)
    expected = {k: v for k, v in replay_stats["results"].items()}

    broker = TansuBroker(log_dir=work)
    broker.start()
    try:
        produce_s = produce_backlog(broker.bootstrap, data, "test-inter")
        log_path = work / "run.log"
        t0 = time.monotonic()
        wall0 = time.time()
        run = subprocess.Popen(
            [
                LOOKOUT,
                "run",
                "--kafka",
                broker.bootstrap,
                "--idle-timeout",
                "1s",
                "--no-view",
                "--state-dir",
                str(work / "state"),
                "--out",
                str(work / "out"),
            ],
            stderr=open(log_path, "wb"),
            stdout=subprocess.DEVNULL,
        )  # noqa: SIM115
        got, done_at = count_results(broker.bootstrap, expected, deadline=t0 + 1800)
        total = done_at - t0
        run.terminate()
        run.wait(60)
        text = log_path.read_text()
        m = re.search(r"^(\S+ \S+) INFO lookout.kafka: kafka: reading ", text, re.M)
        started = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - wall0 if m else 0.0
    finally:
        broker.stop()
    return {
        "records": records,
        "partitions": 3,
        "produce_seconds": round(produce_s, 2),
        "produce_msgs_per_second": round(records / produce_s),
        "run_seconds_until_all_results": round(total, 2),
        "startup_seconds (lock group join, topic checks)": round(started, 2),
        "idle_timeout_seconds (last windows close after it)": 1.0,
        "events_per_second_end_to_end": round(records / total),
        "events_per_second_after_startup": round(records / (total - started)) if started else None,
        "replay_events_per_second": replay_stats["events_per_second"],
        "results_match_replay_counts": got == expected,
        "results": got,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--input", default=None, help="Lines to benchmark (default: `lookout generate --records`).")
    ap.add_argument("--keep", default=None, help="Work directory to keep (default: a temporary one).")
    args = ap.parse_args()
    if args.input:
        data = Path(args.input)
    else:
        data = Path(tempfile.mkdtemp(prefix="lookout-kafka-data-")) / f"backlog-{args.records}.ndjson"
        subprocess.run([LOOKOUT, "generate", str(args.records), "--out", str(data)], check=True)
    print(json.dumps(bench_kafka(data, args.keep), indent=2))


if __name__ == "__main__":
    main()
