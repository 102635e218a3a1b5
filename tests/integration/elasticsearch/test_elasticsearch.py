"""Goal 5 against a real OpenSearch-compatible server (osmem-server): exact counts, no
duplicates, typed mapping, backoff on 429, dead letters with the server's reason, and
`lookout count/search --elasticsearch`. The frozen-server run is in test_elasticsearch_outage.py;
the opt-in run against a real Elasticsearch is in test_elasticsearch_real.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import orjson
import polars as pl
import pytest

from lookout.sinks.es_mapping import RECORD_TYPES
from tests.fixtures.elasticsearch import http_json

LOOKOUT = [str(Path(sys.executable).parent / "lookout")]


def lookout(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOKOUT_ES", "LOOKOUT_ELASTICSEARCH"))}
    full_env.update(env or {})
    p = subprocess.run([*LOOKOUT, *args], capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"lookout {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def generate(path: Path, n: int, seed: int = 7, start: float | None = None) -> Path:
    args = ["generate", str(n), "--out", str(path), "--seed", str(seed)]
    if start is not None:
        args += ["--start", str(start)]
    lookout(*args)
    return path


def server_count(url: str, index: str) -> int:
    """The seed's check, asked of the server directly (after a refresh)."""
    http_json("POST", f"{url}/{index}/_refresh")
    status, body = http_json("GET", f"{url}/{index}/_count")
    assert status == 200, body
    return body["count"]


def input_frame(path: Path) -> pl.DataFrame:
    return pl.read_ndjson(path, schema={"status": pl.String, "@timestamp": pl.String, "request_time": pl.String})


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory, es_url: str) -> dict:
    """5,000 generated records replayed once into index `t-replay`, with the embedded store too."""
    d = tmp_path_factory.mktemp("es-replay")
    src = generate(d / "in.ndjson", 5000)
    p = lookout(
        "replay",
        str(src),
        "--out",
        str(d / "out"),
        "--store",
        str(d / "store"),
        "--json",
        "--elasticsearch",
        es_url,
        "--es-index",
        "t-replay",
    )
    return {"dir": d, "src": src, "index": "t-replay", "summary": orjson.loads(p.stdout)}


def test_replay_count_is_exact_and_a_second_replay_adds_nothing(replayed: dict, es_url: str) -> None:
    assert replayed["summary"]["records"] == 5000
    assert server_count(es_url, "t-replay") == 5000
    lookout(
        "replay",
        str(replayed["src"]),
        "--out",
        str(replayed["dir"] / "out2"),
        "--json",
        "--elasticsearch",
        es_url,
        "--es-index",
        "t-replay",
    )
    assert server_count(es_url, "t-replay") == 5000  # same ids: overwritten, not added
    # the id is the source position: file + line
    first_id = quote(f"{replayed['src']}:1", safe="")
    status, doc = http_json("GET", f"{es_url}/t-replay/_doc/{first_id}")
    assert status == 200 and doc["found"], doc
    first = orjson.loads(replayed["src"].read_bytes().split(b"\n", 1)[0])
    src = doc["_source"]
    assert src["status"] == int(first["status"]) and src["host"] == first["host"]
    assert src["client_ip"] == first["client_ip"] and src["request_time"] == float(first["request_time"])
    secs = float(first["@timestamp"])  # epoch seconds with microseconds; milliseconds kept
    assert src["@timestamp"].endswith("Z") and len(src["@timestamp"]) == 24
    ms = round(secs * 1_000_000) // 1000
    assert src["@timestamp"][-5:-1] == f".{ms % 1000:03d}"


def test_typed_mapping_makes_status_aggregatable(replayed: dict, es_url: str) -> None:
    status, mapping = http_json("GET", f"{es_url}/t-replay/_mapping")
    props = mapping["t-replay"]["mappings"]["properties"]
    assert {f: props[f]["type"] for f in RECORD_TYPES} == RECORD_TYPES
    status, res = http_json(
        "POST",
        f"{es_url}/t-replay/_search",
        {
            "size": 0,
            "aggs": {
                "s": {"terms": {"field": "status", "size": 100}},
                "rt": {"avg": {"field": "request_time"}},
                "r4xx": {"range": {"field": "status", "ranges": [{"from": 400, "to": 500}]}},
            },
        },
    )
    assert status == 200, res
    got = {b["key"]: b["doc_count"] for b in res["aggregations"]["s"]["buckets"]}
    df = input_frame(replayed["src"])
    want = dict(df.group_by(pl.col("status").cast(pl.Int64)).len().iter_rows())
    assert got == want
    assert res["aggregations"]["r4xx"]["buckets"][0]["doc_count"] == sum(v for k, v in want.items() if 400 <= k < 500)
    mean = df.get_column("request_time").cast(pl.Float64).mean()
    assert abs(res["aggregations"]["rt"]["value"] - mean) < 1e-4  # float fields: single precision


def test_count_and_search_answer_from_the_server(replayed: dict, es_url: str) -> None:
    p = lookout("count", "--elasticsearch", es_url, "--index", "t-replay")
    assert orjson.loads(p.stdout) == {"count": 5000}
    p = lookout("count", "--index", "t-replay", env={"LOOKOUT_ELASTICSEARCH": es_url})
    assert orjson.loads(p.stdout) == {"count": 5000}
    p = lookout("count", "--elasticsearch", es_url, "--index", "t-no-such-index")
    assert orjson.loads(p.stdout) == {"count": 0}
    store = str(replayed["dir"] / "store")
    for filters in (
        ["--status", "4xx", "--limit", "15"],
        ["--host", "api_7.example.com", "--limit", "5"],
        [
            "--country",
            "DE",
            "--method",
            "POST",
            "--since",
            "2022-08-03T06:50:30Z",
            "--until",
            "2022-08-03T06:51:00Z",
            "--limit",
            "500",
        ],
    ):
        es = [
            orjson.loads(x)
            for x in lookout("search", "--elasticsearch", es_url, "--index", "t-replay", *filters).stdout.splitlines()
        ]
        emb = [orjson.loads(x) for x in lookout("search", "--store", store, *filters).stdout.splitlines()]
        assert es, filters
        # same rows, same shape; within one millisecond the order is the server's (it keeps ms)
        key = lambda r: (r["@timestamp"], r["id"])  # noqa: E731
        assert sorted(es, key=key) == sorted(emb, key=key), filters
        assert [r["@timestamp"] for r in es] == sorted((r["@timestamp"] for r in es), reverse=True)


def test_429_answers_lead_to_backoff_then_success(tmp_path: Path, fault_proxy, es_url: str) -> None:
    proxy = fault_proxy(fail_bulks=3, item_429_bulks=2)
    src = generate(tmp_path / "in.ndjson", 3000, seed=11)
    p = lookout(
        "replay",
        str(src),
        "--out",
        str(tmp_path / "out"),
        "--json",
        "--elasticsearch",
        proxy.url,
        "--es-index",
        "t-429",
        env={"LOOKOUT_ES_BULK_DOCS": "500"},
    )
    assert proxy.answered_429 == 3 and proxy.items_429 > 0
    assert "retrying" in p.stderr and "answering again" in p.stderr
    assert server_count(es_url, "t-429") == 3000
    assert (tmp_path / "out" / "rejected.jsonl").read_bytes() == b""


def test_mapping_rejection_goes_to_dead_letters_with_the_servers_reason(tmp_path: Path, es_url: str) -> None:
    """Two records valid for lookout that an index made by someone else refuses: its `server` is
    a `long`, and they say `s_v3`. (lookout's own mapping takes every valid record: the contract
    refuses the IPv6 zone ids an Elasticsearch `ip` has no room for.)"""
    status, _ = http_json("PUT", f"{es_url}/t-reject", {"mappings": {"properties": {"server": {"type": "long"}}}})
    assert status == 200
    src = generate(tmp_path / "in.ndjson", 1000, seed=3)
    good = [dict(orjson.loads(ln), server="7") for ln in src.read_bytes().splitlines()]
    bad = [dict(good[0], server="s_v3"), dict(good[1], server="s_v4")]
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in good + bad))
    p = lookout("replay", str(src), "--out", str(tmp_path / "out"), "--json", "--elasticsearch", es_url, "--es-index", "t-reject")
    assert orjson.loads(p.stdout)["records"] == 1002  # lookout accepts both
    assert orjson.loads(p.stdout)["refused"] == {"elasticsearch": 2}  # the server refused two: partial, exit 0
    assert server_count(es_url, "t-reject") == 1000
    dead = [orjson.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()]
    assert [d["reason"] for d in dead] == ["elasticsearch-rejected"] * 2
    by_line = {d["line"]: d for d in dead}
    assert set(by_line) == {1001, 1002} and all(d["source"] == str(src) for d in dead)
    for line, server in ((1001, "s_v3"), (1002, "s_v4")):
        assert "failed to parse field [server] of type [long]" in by_line[line]["detail"]
        assert f'For input string: "{server}"' in by_line[line]["detail"]
        assert orjson.loads(by_line[line]["raw"])["server"] == server  # the document sent
    assert all(d["status"] == 400 and d["index"] == "t-reject" for d in dead)
    assert "2 rejected" in p.stderr


def test_existing_index_with_other_types_is_reported_and_its_rejections_dead_lettered(tmp_path: Path, es_url: str) -> None:
    """An index created before lookout's template keeps its own mapping (templates apply at
    creation only): here `host` is an `ip`, so every document is refused - and every one is
    accounted for, in the dead letters and the summary, and the command fails (exit 1)."""
    status, body = http_json("PUT", f"{es_url}/t-conflict", {"mappings": {"properties": {"host": {"type": "ip"}}}})
    assert status == 200, body
    src = generate(tmp_path / "in.ndjson", 300, seed=5)
    p = lookout(
        "replay",
        str(src),
        "--out",
        str(tmp_path / "out"),
        "--json",
        "--elasticsearch",
        es_url,
        "--es-index",
        "t-conflict",
        check=False,
    )
    assert p.returncode == 1, p.stderr
    assert orjson.loads(p.stdout)["refused"] == {"elasticsearch": 300}
    assert "error: elasticsearch refused every document sent (300)" in p.stderr
    assert "already exists with other types (host is ip, not keyword)" in p.stderr
    assert server_count(es_url, "t-conflict") == 0
    dead = (tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()
    assert len(dead) == 300
    assert all(b"failed to parse field [host] of type [ip]" in d for d in dead)


def test_daily_indices_behind_the_alias_and_rule_results(tmp_path: Path, es_url: str) -> None:
    src = generate(tmp_path / "in.ndjson", 3000, start=1_659_571_185.0)  # 23:59:45 UTC: crosses midnight
    out = tmp_path / "out"
    lookout(
        "replay",
        str(src),
        "--out",
        str(out),
        "--json",
        "--elasticsearch",
        es_url,
        "--es-index",
        "t-daily",
        "--es-daily",
        "--es-results",
        env={"LOOKOUT_ES_RESULTS_PREFIX": "t-res-"},
    )
    status, aliases = http_json("GET", f"{es_url}/_alias/t-daily")
    assert sorted(aliases) == ["t-daily-2022.08.03", "t-daily-2022.08.04"]
    assert server_count(es_url, "t-daily") == 3000
    assert orjson.loads(lookout("count", "--elasticsearch", es_url, "--index", "t-daily").stdout) == {"count": 3000}
    for rule in ("goal3-topic", "goal4-topic"):  # emit: final - one result per window and key
        lines = (out / f"{rule}.jsonl").read_bytes().splitlines()
        assert lines and server_count(es_url, f"t-res-{rule}") == len(lines)
    _, m = http_json("GET", f"{es_url}/t-res-goal4-topic/_mapping")
    props = m["t-res-goal4-topic"]["mappings"]["properties"]
    assert props["window"]["properties"]["start"]["type"] == "date" and props["host"]["type"] == "keyword"
    assert props["@timestamp"]["type"] == "date"


def test_credentials_are_sent_as_configured(tmp_path: Path, fault_proxy, es_url: str) -> None:
    """Basic auth from the URL's userinfo or --es-user/--es-password, API key from --es-api-key
    (the test server has no security; the proxy in front of it records what arrives)."""
    import base64

    src = generate(tmp_path / "in.ndjson", 50)
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    cases = [
        (["{userinfo}"], {}, f"Basic {b64('elastic:p@ss')}"),
        (["{proxy}", "--es-user", "lookout", "--es-password", "pw"], {}, f"Basic {b64('lookout:pw')}"),
        (["{proxy}", "--es-api-key", "kid:secret"], {}, f"ApiKey {b64('kid:secret')}"),
        (["{proxy}"], {"LOOKOUT_ES_API_KEY": "a2lkOnNlY3JldA=="}, "ApiKey a2lkOnNlY3JldA=="),
    ]
    for args, env, want in cases:
        proxy = fault_proxy()
        userinfo = proxy.url.replace("http://", "http://elastic:p%40ss@")
        args = [a.replace("{proxy}", proxy.url).replace("{userinfo}", userinfo) for a in args]
        lookout(
            "replay",
            str(src),
            "--out",
            str(tmp_path / "out"),
            "--json",
            "--es-index",
            "t-auth",
            "--elasticsearch",
            *args,
            env=env,
        )
        assert proxy.authorization == {want}, (args, proxy.authorization)
    assert server_count(es_url, "t-auth") == 50


def test_incidents_are_indexed_by_id_with_their_last_status(tmp_path: Path, es_url: str) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules: [{name: busy, window: {size: 20s, hop: 1s}, group_by: client_ip, aggregate: count, threshold: count > 3}]\n"
    )
    src = generate(tmp_path / "in.ndjson", 3000)
    lookout(
        "replay",
        str(src),
        "--rules",
        str(rules),
        "--out",
        str(tmp_path / "out"),
        "--json",
        "--elasticsearch",
        es_url,
        "--es-index",
        "t-incidents",
    )
    lines = [orjson.loads(x) for x in (tmp_path / "out" / "incidents.jsonl").read_bytes().splitlines()]
    ids = {d["id"] for d in lines}
    assert ids and server_count(es_url, "lookout-incidents") >= len(ids)
    for d in lines[-5:]:
        status, body = http_json("GET", f"{es_url}/lookout-incidents/_doc/{d['id']}")
        assert status == 200, body
        assert body["_source"]["status"] == "resolved" and body["_source"]["windows"] == d["windows"]


def test_new_fields_are_typed_aggregatable_and_searchable_by_path_prefix(tmp_path: Path, es_url: str) -> None:
    """Issue 9: path / user_agent / referer as keywords, bytes as long; `search --path PREFIX` answers
    alike from the server and the embedded store; records without the fields stay valid."""
    src = tmp_path / "in.ndjson"
    paths = ["/api/v1/items?id=1", "/api/v2", "/static/app.js", "/apix", "-"]
    lines, total_bytes = [], 0
    for i in range(400):
        rec = {"client_ip": f"10.1.0.{i % 50}", "status": "404" if i % 3 else "200", "host": "h", "@timestamp": 1_659_509_400 + i}
        if i % 4:  # every fourth record is an old-style one, without the new fields
            rec |= {"path": paths[i % 5], "bytes": str(i * 10), "user_agent": f"<ua {i % 3}>\u00e9", "referer": "-"}
            total_bytes += i * 10
        lines.append(orjson.dumps(rec))
    src.write_bytes(b"\n".join(lines) + b"\n")
    store = str(tmp_path / "store")
    summary = lookout(
        "replay",
        str(src),
        "--out",
        str(tmp_path / "out"),
        "--store",
        store,
        "--json",
        "--elasticsearch",
        es_url,
        "--es-index",
        "t-fields",
    )
    assert orjson.loads(summary.stdout)["records"] == 400
    assert server_count(es_url, "t-fields") == 400
    status, mapping = http_json("GET", f"{es_url}/t-fields/_mapping")
    props = mapping["t-fields"]["mappings"]["properties"]
    assert {f: props[f]["type"] for f in ("path", "user_agent", "referer", "bytes")} == {
        "path": "keyword",
        "user_agent": "keyword",
        "referer": "keyword",
        "bytes": "long",
    }
    status, res = http_json(
        "POST",
        f"{es_url}/t-fields/_search",
        {"size": 0, "aggs": {"b": {"sum": {"field": "bytes"}}, "p": {"terms": {"field": "path", "size": 10}}}},
    )
    assert status == 200, res
    assert res["aggregations"]["b"]["value"] == total_bytes
    want_paths = {p: sum(1 for i in range(400) if i % 4 and paths[i % 5] == p) for p in paths if p != "-"}
    assert {b["key"]: b["doc_count"] for b in res["aggregations"]["p"]["buckets"]} == want_paths
    for filters in (["--path", "/api/", "--limit", "500"], ["--path", "/api/", "--status", "4xx", "--limit", "500"]):
        es = [
            orjson.loads(x)
            for x in lookout("search", "--elasticsearch", es_url, "--index", "t-fields", *filters).stdout.splitlines()
        ]
        emb = [orjson.loads(x) for x in lookout("search", "--store", store, *filters).stdout.splitlines()]
        assert es and all(r["path"].startswith("/api/") for r in es), filters
        key = lambda r: (r["@timestamp"], r["id"])  # noqa: E731
        assert sorted(es, key=key) == sorted(emb, key=key), filters
    assert {r["path"] for r in es} == {"/api/v1/items?id=1", "/api/v2"}


def test_an_index_from_before_the_new_fields_gets_them_added(tmp_path: Path, es_url: str) -> None:
    """An index an older lookout made (its mapping without path/user_agent/referer/bytes, dynamic off)
    gets the fields added at start-up, so the new records' paths are searchable there too."""
    old_types = {f: t for f, t in RECORD_TYPES.items() if f not in ("path", "user_agent", "referer", "bytes")}
    props = {
        f: ({"type": t, "format": "strict_date_optional_time||epoch_millis"} if t == "date" else {"type": t})
        for f, t in old_types.items()
    }
    status, body = http_json("PUT", f"{es_url}/t-old-mapping", {"mappings": {"dynamic": False, "properties": props}})
    assert status == 200, body
    src = tmp_path / "in.ndjson"
    recs = [
        {"client_ip": "10.2.0.1", "status": "404", "host": "h", "@timestamp": 1_659_509_400 + i, "path": f"/old/{i}", "bytes": i}
        for i in range(20)
    ]
    src.write_bytes(b"\n".join(orjson.dumps(r) for r in recs) + b"\n")
    lookout(
        "replay", str(src), "--out", str(tmp_path / "out"), "--json", "--elasticsearch", es_url, "--es-index", "t-old-mapping"
    )
    assert server_count(es_url, "t-old-mapping") == 20
    status, mapping = http_json("GET", f"{es_url}/t-old-mapping/_mapping")
    props = mapping["t-old-mapping"]["mappings"]["properties"]
    assert {f: props[f]["type"] for f in RECORD_TYPES} == RECORD_TYPES
    rows = [
        orjson.loads(x)
        for x in lookout("search", "--elasticsearch", es_url, "--index", "t-old-mapping", "--path", "/old/1").stdout.splitlines()
    ]
    assert sorted(r["path"] for r in rows) == ["/old/1"] + [f"/old/{i}" for i in range(10, 20)]
