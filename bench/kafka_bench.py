"""End-to-end events/s through a real Kafka-protocol broker (Tansu, in memory).

A backlog of N records (`lookout generate N`) is produced to a 3-partition `test-inter` first;
then `lookout run --kafka` is started and timed until every result that `lookout replay` finds
in the same records has arrived on the goal topics (read back from the broker). Prints JSON.

    .venv/bin/python bench/kafka_bench.py [--records 2000000] [--keep DIR]
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


def produce_backlog(bootstrap: str, path: Path, topic: str) -> float:
    t0 = time.monotonic()
    subprocess.run([LOOKOUT, "produce", "--kafka", bootstrap, "--topic", topic, "--input", str(path)], check=True)
    return time.monotonic() - t0


def count_results(bootstrap: str, expected: dict[str, int], deadline: float) -> tuple[dict[str, int], float]:
    """Read the goal topics until each holds its expected count; return counts and arrival time."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False})
    for _ in range(100):
        md = c.list_topics(timeout=5)
        if all(t in md.topics and md.topics[t].partitions for t in expected):
            break
        time.sleep(0.1)
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in expected for p in md.topics[t].partitions])
    got = dict.fromkeys(expected, 0)
    done_at = time.monotonic()
    while got != expected and time.monotonic() < deadline:
        for m in c.consume(10_000, 0.1):
            if m.error() is None:
                got[m.topic()] += 1
                done_at = time.monotonic()
    c.close()
    return got, done_at


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--keep", default=None, help="Work directory to keep (default: a temporary one).")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="lookout-kafka-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"backlog-{args.records}.ndjson"
    if not data.exists():
        subprocess.run([LOOKOUT, "generate", str(args.records), "--out", str(data)], check=True)
    rep = subprocess.run([LOOKOUT, "replay", str(data), "--out", str(work / "replay"), "--json"],
                         check=True, capture_output=True, text=True)
    replay_stats = json.loads(rep.stdout)
    expected = {k: v for k, v in replay_stats["results"].items()}

    broker = TansuBroker(log_dir=work)
    broker.start()
    try:
        produce_s = produce_backlog(broker.bootstrap, data, "test-inter")
        log_path = work / "run.log"
        t0 = time.monotonic()
        wall0 = time.time()
        run = subprocess.Popen([LOOKOUT, "run", "--kafka", broker.bootstrap, "--idle-timeout", "1s", "--no-view",
                                "--state-dir", str(work / "state"), "--out", str(work / "out")],
                               stderr=open(log_path, "wb"), stdout=subprocess.DEVNULL)  # noqa: SIM115
        got, done_at = count_results(broker.bootstrap, expected, deadline=t0 + 1800)
        total = done_at - t0
        run.terminate()
        run.wait(60)
        text = log_path.read_text()
        m = re.search(r"^(\S+ \S+) INFO lookout.kafka: kafka: reading ", text, re.M)
        started = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - wall0 if m else 0.0
    finally:
        broker.stop()
    out = {
        "records": args.records,
        "partitions": 3,
        "produce_seconds": round(produce_s, 2),
        "produce_msgs_per_second": round(args.records / produce_s),
        "run_seconds_until_all_results": round(total, 2),
        "startup_seconds (lock group join, topic checks)": round(started, 2),
        "idle_timeout_seconds (last windows close after it)": 1.0,
        "events_per_second_end_to_end": round(args.records / total),
        "events_per_second_after_startup": round(args.records / (total - started)) if started else None,
        "replay_events_per_second": replay_stats["events_per_second"],
        "results_match_replay_counts": got == expected,
        "results": got,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
