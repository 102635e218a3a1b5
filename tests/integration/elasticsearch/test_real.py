"""OPT-IN: the same guarantees against a real Elasticsearch 8.x/9.x or OpenSearch 2.x/3.x.

Skipped unless LOOKOUT_TEST_ES_URL is set, e.g.
    LOOKOUT_TEST_ES_URL=https://elastic:changeme@localhost:9200 LOOKOUT_ES_CA_CERTS=ca.crt \\
        .venv/bin/pytest tests/integration/elasticsearch/test_real.py
(LOOKOUT_ES_API_KEY / LOOKOUT_ES_CA_CERTS / LOOKOUT_ES_INSECURE are passed through). The test
writes to its own index `lookout-test-<pid>-<time>` and deletes that index and its template.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from lookout.sinks.es_http import EsClient, EsConfig
from lookout.sinks.es_mapping import RECORD_TYPES

REAL_URL = os.environ.get("LOOKOUT_TEST_ES_URL")
pytestmark = pytest.mark.skipif(
    not REAL_URL, reason="opt-in: set LOOKOUT_TEST_ES_URL to test against a real Elasticsearch/OpenSearch"
)
LOOKOUT = str(Path(sys.executable).parent / "lookout")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([LOOKOUT, *args], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p


def test_real_server_count_mapping_idempotence(tmp_path: Path) -> None:
    assert REAL_URL
    index = f"lookout-test-{os.getpid()}-{int(time.time())}"
    client = EsClient(EsConfig.from_url(REAL_URL))

    def req(method: str, path: str, body: Any = None) -> Any:
        r = client.request(method, path, body)
        assert r.status < 300, (method, path, r.status, r.text[:500])
        return r.data

    src = tmp_path / "in.ndjson"
    _run("generate", "3000", "--out", str(src))
    try:
        for _ in range(2):  # the second replay must add nothing
            _run("replay", str(src), "--out", str(tmp_path / "out"), "--json", "--elasticsearch", REAL_URL, "--es-index", index)
            req("POST", f"/{index}/_refresh")
            assert req("GET", f"/{index}/_count")["count"] == 3000
        props = req("GET", f"/{index}/_mapping")[index]["mappings"]["properties"]
        assert {f: props[f]["type"] for f in RECORD_TYPES} == RECORD_TYPES
        aggs = req("POST", f"/{index}/_search", {"size": 0, "aggs": {"s": {"terms": {"field": "status"}}}})
        assert (
            sum(b["doc_count"] for b in aggs["aggregations"]["s"]["buckets"]) + aggs["aggregations"]["s"]["sum_other_doc_count"]
            == 3000
        )
        p = _run("count", "--elasticsearch", REAL_URL, "--index", index)
        assert orjson.loads(p.stdout) == {"count": 3000}
        rows = _run("search", "--elasticsearch", REAL_URL, "--index", index, "--status", "4xx", "--limit", "5")
        assert all(400 <= orjson.loads(x)["status"] < 500 for x in rows.stdout.splitlines())
    finally:
        client.request("DELETE", f"/{index}")
        client.request("DELETE", f"/_index_template/lookout-{index}")
