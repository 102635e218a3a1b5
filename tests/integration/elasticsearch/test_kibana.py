"""Kibana saved objects and `lookout kibana-setup`.

Kibana cannot run on these machines, so the import is tested against an HTTP server the test
starts that holds Kibana's import API to its documented request shape (POST
/api/saved_objects/_import, multipart/form-data with an NDJSON `file` part, the `kbn-xsrf`
header, Basic auth) and keeps the objects it was given the way Kibana does: by (type, id), a
conflict error for an existing object unless `overwrite=true`, an error for a reference to an
object that is neither in the file nor already stored."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from lookout.sinks.es_mapping import RECORD_TYPES
from tests.fixtures.ports import free_port

ROOT = Path(__file__).resolve().parents[3]
PACKAGED = ROOT / "src" / "lookout" / "kibana" / "lookout.ndjson"
SECRET = "kb-7d1e-never-print"


def objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in PACKAGED.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- the objects themselves


def test_deploy_copy_is_the_packaged_file() -> None:
    assert (ROOT / "deploy" / "kibana" / "lookout.ndjson").read_bytes() == PACKAGED.read_bytes()


def test_saved_objects_are_consistent() -> None:
    objs = objects()
    ids = [(o["type"], o["id"]) for o in objs]
    assert len(ids) == len(set(ids))
    views = {o["id"]: o["attributes"] for o in objs if o["type"] == "index-pattern"}
    assert {v["title"] for v in views.values()} == {"test-inter", "lookout-incidents"}
    assert views["lookout-test-inter"]["timeFieldName"] == "@timestamp"
    for o in objs:
        for ref in o["references"]:
            assert (ref["type"], ref["id"]) in ids, f"{o['id']}: dangling reference {ref}"
        meta = o["attributes"].get("kibanaSavedObjectMeta")
        if meta and o["type"] != "dashboard":
            ss = json.loads(meta["searchSourceJSON"])
            assert ss["indexRefName"] in {r["name"] for r in o["references"]}
    for o in objs:
        if o["type"] != "visualization":
            continue
        vis = json.loads(o["attributes"]["visState"])
        for agg in vis["aggs"]:
            field = agg["params"].get("field")
            assert field is None or field in RECORD_TYPES, f"{o['id']}: unknown field {field}"
    dash = next(o for o in objs if o["type"] == "dashboard")
    panels = json.loads(dash["attributes"]["panelsJSON"])
    refs = {r["name"]: r for r in dash["references"]}
    assert {refs[f"{p['panelIndex']}:{p['panelRefName']}"]["id"] for p in panels} == {
        "lookout-requests-by-status-class",
        "lookout-top-clients",
        "lookout-incidents-list",
    }
    status = json.loads(next(o for o in objs if o["id"] == "lookout-requests-by-status-class")["attributes"]["visState"])
    ranges = next(a for a in status["aggs"] if a["type"] == "range")["params"]["ranges"]
    assert [r["label"] for r in ranges] == ["1xx", "2xx", "3xx", "4xx", "5xx"]


# ---------------------------------------------------------------- a Kibana-shaped receiver


class KibanaImportServer:
    def __init__(self, user: str, password: str, not_ready: int = 0) -> None:
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.not_ready = not_ready
        self.store: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests = 0
        self.lock = threading.Lock()
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                status, body = srv.handle(self.path, dict(self.headers), self.rfile.read(n))
                out = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests += 1
            if self.requests <= self.not_ready:
                return 503, {"statusCode": 503, "error": "Service Unavailable", "message": "Kibana server is not ready yet"}
        h = {k.lower(): v for k, v in headers.items()}
        if h.get("authorization") != self.expected:
            return 401, {
                "statusCode": 401,
                "error": "Unauthorized",
                "message": "[security_exception]: unable to authenticate user",
            }
        url = urlsplit(path)
        if url.path != "/api/saved_objects/_import":
            return 404, {"statusCode": 404, "error": "Not Found", "message": f"no route {url.path}"}
        if "kbn-xsrf" not in h:
            return 400, {"statusCode": 400, "error": "Bad Request", "message": "Request must contain a kbn-xsrf header."}
        ctype = h.get("content-type", "")
        if not ctype.startswith("multipart/form-data; boundary="):
            return 415, {"statusCode": 415, "error": "Unsupported Media Type", "message": ctype}
        msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
        parts = [p for p in msg.iter_parts() if p.get_param("name", header="content-disposition") == "file"]
        if len(parts) != 1 or not (parts[0].get_filename() or "").endswith(".ndjson"):
            return 400, {"statusCode": 400, "error": "Bad Request", "message": "expected one .ndjson file part"}
        overwrite = parse_qs(url.query).get("overwrite") == ["true"]
        lines = [json.loads(line) for line in parts[0].get_payload(decode=True).splitlines() if line.strip()]
        incoming = {(o["type"], o["id"]) for o in lines}
        errors, ok = [], []
        with self.lock:
            for o in lines:
                key = (o["type"], o["id"])
                missing = [r for r in o.get("references", []) if (r["type"], r["id"]) not in incoming | set(self.store)]
                if missing:
                    errors.append(
                        {"type": o["type"], "id": o["id"], "error": {"type": "missing_references", "references": missing}}
                    )
                elif key in self.store and not overwrite:
                    errors.append({"type": o["type"], "id": o["id"], "error": {"type": "conflict"}})
                else:
                    ok.append(
                        {
                            "type": o["type"],
                            "id": o["id"],
                            "meta": {"title": o["attributes"].get("title")},
                            **({"overwrite": True} if key in self.store else {}),
                        }
                    )
                    self.store[key] = o
        body: dict[str, Any] = {"success": not errors, "successCount": len(ok)}
        if ok:
            body["successResults"] = ok
        if errors:
            body["errors"] = errors
        return 200, body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def kibana() -> Iterator[KibanaImportServer]:
    srv = KibanaImportServer("elastic", SECRET)
    yield srv
    srv.close()


def setup_cmd(lookout_cmd: list[str], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [*lookout_cmd, "kibana-setup", *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )
    assert "Traceback" not in r.stdout + r.stderr
    return r


def test_import_is_idempotent(lookout_cmd: list[str], kibana: KibanaImportServer) -> None:
    env = {"LOOKOUT_KIBANA_USER": "elastic", "LOOKOUT_KIBANA_PASSWORD": SECRET}
    first = setup_cmd(lookout_cmd, kibana.url, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "imported 6 objects" in first.stdout
    assert "✔ dashboard      lookout-overview" in first.stdout
    stored = dict(kibana.store)
    assert set(stored) == {(o["type"], o["id"]) for o in objects()}
    second = setup_cmd(lookout_cmd, kibana.url, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert kibana.store == stored  # same objects, same ids: nothing added
    assert SECRET not in first.stdout + first.stderr + second.stdout + second.stderr


def test_refused_credentials_and_no_kibana(lookout_cmd: list[str], kibana: KibanaImportServer) -> None:
    r = setup_cmd(lookout_cmd, kibana.url, "--user", "elastic", "--password", "wrong-" + SECRET)
    assert r.returncode == 1 and "HTTP 401, credentials refused" in r.stderr
    userinfo = kibana.url.replace("http://", f"http://elastic:wrong-{SECRET}@")
    r = setup_cmd(lookout_cmd, userinfo)
    assert r.returncode == 1 and "credentials refused" in r.stderr and SECRET not in r.stdout + r.stderr
    assert not kibana.store
    r = setup_cmd(lookout_cmd, f"http://127.0.0.1:{free_port()}", "--wait", "1")
    assert r.returncode == 1 and "Kibana not ready after 1 s" in r.stderr and "Connection refused" in r.stderr


def test_waits_for_a_starting_kibana() -> None:
    from lookout.kibana import import_saved_objects

    srv = KibanaImportServer("elastic", SECRET, not_ready=2)
    try:
        res = import_saved_objects(srv.url.replace("http://", f"http://elastic:{SECRET}@"), wait=30)
        assert res.attempts == 3 and res.imported == len(objects())
        assert SECRET not in res.url
    finally:
        srv.close()
