"""Documents/s indexed by `lookout replay FILE --elasticsearch URL` into the test server.

    .venv/bin/python bench/es_bench.py [--records 500000] [--url URL]

Without --url it starts the in-memory osmem-server from the test extra on a free port. Prints
one JSON object: the end-to-end indexing rate, the same replay without Elasticsearch (engine
only), and lookout's own cost of encoding bulk bodies (no network), so it is clear which side
limits the figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
LOOKOUT = str(BIN / "lookout")


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    spec = importlib.util.find_spec("osmem_server")
    assert spec and spec.origin, "pip install osmem-server (test extra)"
    exe = Path(spec.origin).parent / "bin" / "osmem-server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(exe), "-addr", f"127.0.0.1:{port}", "-no-stdin-watch", "-parent-pid", str(os.getpid())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("osmem-server did not start")


def count(url: str, index: str) -> int:
    urllib.request.urlopen(urllib.request.Request(f"{url}/{index}/_refresh", method="POST"), timeout=60).read()
    return json.loads(urllib.request.urlopen(f"{url}/{index}/_count", timeout=60).read())["count"]


def encode_rate(path: Path, url: str) -> float:
    """Records/s for turning parsed records into bulk bodies (polars + one join), no sending."""
    from lookout.records import parse_chunk
    from lookout.sinks.elasticsearch import ElasticsearchSink
    from lookout.sources.files import file_chunks

    sink = ElasticsearchSink.from_url(url, index="bench-encode")
    chunks = [(c, parse_chunk(c.data or b"").records) for c in file_chunks(str(path))]
    t = time.perf_counter()
    n = 0
    for c, recs in chunks:
        items = sink._record_items(recs, c.ids(recs.get_column("line")))
        "".join(items).encode()
        n += len(items)
    el = time.perf_counter() - t
    sink._pool.shutdown()
    return n / el


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--url", default=None, help="an existing server (default: start osmem-server)")
    args = ap.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "in.ndjson"
            subprocess.run([LOOKOUT, "generate", str(args.records), "--out", str(src)], check=True)
            t = time.perf_counter()
            subprocess.run([LOOKOUT, "replay", str(src), "--out", f"{d}/out0", "--json"], check=True, stdout=subprocess.DEVNULL)
            engine_s = time.perf_counter() - t
            index = f"bench-{int(time.time())}"
            t = time.perf_counter()
            p = subprocess.run(
                [LOOKOUT, "replay", str(src), "--out", f"{d}/out1", "--json", "--elasticsearch", url, "--es-index", index],
                check=True,
                capture_output=True,
                text=True,
            )
            es_s = time.perf_counter() - t
            n = count(url, index)
            enc = encode_rate(src, url)
            rss = None
            if proc is not None:
                with open(f"/proc/{proc.pid}/status") as f:
                    rss = next((int(ln.split()[1]) // 1024 for ln in f if ln.startswith("VmRSS")), None)
        out = {
            "records": args.records,
            "indexed": n,
            "replay_with_elasticsearch_s": round(es_s, 2),
            "documents_per_second": round(n / es_s),
            "replay_without_elasticsearch_s": round(engine_s, 2),
            "bulk_encode_records_per_second": round(enc),
            "server": "osmem-server 0.1.6 (in-memory)" if proc else url,
            "server_rss_mb": rss,
            "cpus": os.cpu_count(),
            "summary": json.loads(p.stdout),
        }
        print(json.dumps(out, indent=2))
        if n != args.records:
            raise SystemExit(f"count {n} != {args.records}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
