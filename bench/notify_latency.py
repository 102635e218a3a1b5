"""Firing-notification latency of `lookout run --tail`: from the moment the log line that
crosses a threshold is written to the moment a local webhook receiver gets the firing
notification (tail polling, parsing, the engine, the commit interval, the outbox and HTTP all
included).

A writer appends background traffic (event time = wall clock, 20 lines/s from rotating clients
that never alert) and, every few seconds, a burst of 11 requests from a new client (rule:
count > 10 in 20 s); the 11th line crosses. Prints the median, p90 and max over the bursts.

    .venv/bin/python bench/notify_latency.py [--bursts 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import machine  # noqa: E402

LOOKOUT = str(Path(sys.executable).parent / "lookout")
RULES = """
lateness: 2s
rules:
  - {name: busy, window: {size: 20s, hop: 1s}, group_by: client_ip, aggregate: count, threshold: count > 10}
notify:
  - {type: webhook, url: "http://127.0.0.1:${PORT}/hook"}
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bursts", type=int, default=15)
    args = ap.parse_args()
    arrived: dict[str, float] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if body["status"] == "firing":
                arrived.setdefault(body["key"]["client_ip"], time.time())
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="lookout-notify-bench-"))
    (tmp / "rules.yaml").write_text(RULES)
    log = tmp / "access.log"
    log.touch()
    env = {**os.environ, "PORT": str(server.server_address[1])}
    proc = subprocess.Popen(
        [
            LOOKOUT,
            "run",
            "--tail",
            str(log),
            "--rules",
            str(tmp / "rules.yaml"),
            "--state-dir",
            str(tmp / "state"),
            "--out",
            str(tmp / "out"),
            "--no-view",
            "--http",
            "off",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "run.log", "wb"),
    )  # noqa: SIM115
    written: dict[str, float] = {}
    try:
        with open(log, "ab", buffering=0) as f:

            def line(client: str) -> None:
                f.write(
                    orjson.dumps({"@timestamp": round(time.time(), 3), "client_ip": client, "host": "h", "status": 200}) + b"\n"
                )

            time.sleep(2)
            n = 0
            for b in range(args.bursts):
                for _ in range(60):  # 3 s of background traffic
                    line(f"10.0.{n % 250}.{n // 250 % 250}")
                    n += 1
                    time.sleep(0.05)
                client = f"10.9.{b}.1"
                for _ in range(10):
                    line(client)
                    time.sleep(0.01)
                line(client)  # the 11th: crosses the threshold
                written[client] = time.time()
            deadline = time.time() + 10
            while len(arrived) < len(written) and time.time() < deadline:
                line(f"10.0.{n % 250}.{n // 250 % 250}")
                n += 1
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(30)
        server.shutdown()
    lat = sorted(arrived[c] - t for c, t in written.items() if c in arrived)
    missing = len(written) - len(lat)
    print(f"machine: {machine()}")
    print(f"bursts: {len(written)}, notified: {len(lat)}" + (f", MISSING {missing}" if missing else ""))
    if lat:
        p90 = lat[min(len(lat) - 1, int(0.9 * len(lat)))]
        print(
            f"firing latency (line written -> receiver): median {statistics.median(lat):.3f} s, "
            f"p90 {p90:.3f} s, max {lat[-1]:.3f} s"
        )


if __name__ == "__main__":
    main()
