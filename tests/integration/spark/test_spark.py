"""lookout spark against lookout replay: the same input, the same results (real Spark, local mode).

One messy data set (every value shape the record contract accepts, disorder within the
lateness, invalid lines) goes through `lookout replay` and `lookout spark --input` once each
(session fixture); the tests compare what they wrote. Kafka mode: test_spark_kafka.py.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pyspark  # noqa: E402,F401  (a hard requirement: an import error fails, never skips)
import pytest

from lookout.records import Rejected, parse_line
from lookout.rules import load_rules_text
from tests.spark_data import BYTE_LINES, INVALID_LINES, LATE_LINES, RULES_YAML, dead_letters, read_lines, utf8_twins, write_messy

RULES = load_rules_text(RULES_YAML)
RULE_NAMES = [r.name for r in RULES.rules]


@pytest.fixture(scope="session")
def differential(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("spark-diff")
    rules = d / "rules.yaml"
    rules.write_text(RULES_YAML)
    # Two files, one after the other in event time (b goes on where a stops, 75 s on), so the
    # dead letters' `source` must map back to each.
    a = write_messy(d / "a.ndjson", 9000, seed=11, late=True)  # with records beyond the lateness
    b_start = 1_659_509_400.0 + 9000 / 120 + 1
    b = write_messy(d / "b.ndjson", 3000, seed=12, start=b_start)
    exe = Path(__import__("sys").executable).parent / "lookout"
    subprocess.run(
        [str(exe), "replay", str(a), str(b), "--rules", str(rules), "--out", str(d / "replay"), "--no-progress"],
        check=True,
        capture_output=True,
    )
    p = subprocess.run(
        [
            str(exe),
            "spark",
            "--input",
            str(a),
            "--input",
            str(b),
            "--rules",
            str(rules),
            "--out",
            str(d / "spark"),
            "--master",
            "local[2]",
            # chunks of 300 kB, four per micro-batch, read as splits of 256 kB: several batches,
            # each chunk parsed as splits at once, whose summary rows must carry the running
            # maximum across them, and the chunks' 44 kB tails packed into one task (largest
            # first: out of input order), each keeping its own running maximum
            "--conf",
            "spark.lookout.chunkBytes=300000",
            "--conf",
            "spark.sql.files.maxPartitionBytes=262144",
            "--conf",
            "spark.sql.files.openCostInBytes=1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    (d / "summary.json").write_text(p.stdout.strip().splitlines()[-1])
    return {
        "replay": d / "replay",
        "spark": d / "spark",
        "summary": d / "summary.json",
        "inputs": [a, b],
        "twins": utf8_twins() + utf8_twins(b_start),
    }


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_same_results_as_replay(differential: dict, rule: str) -> None:
    want = read_lines(differential["replay"] / f"{rule}.jsonl")
    got = read_lines(differential["spark"] / f"{rule}.jsonl")
    assert want, f"{rule}: the data set should make results for every rule"
    assert len(got) == len(want), f"{rule}: spark {len(got)} results, replay {len(want)}"
    assert got == want


def test_alerts_and_finals_are_exercised(differential: dict) -> None:
    """The data set is useful only if thresholds cut: some windows alert, and the count value of
    an alert is the first count that meets the threshold, not the final count."""
    goal1 = [json.loads(x) for x in read_lines(differential["replay"] / "goal1-topic.jsonl")]
    assert goal1 and {x["count"] for x in goal1} == {11}
    hop = [json.loads(x) for x in read_lines(differential["spark"] / "hop-45s-15s.jsonl")]
    assert hop and {x["count"] for x in hop} == {12}
    avg = [json.loads(x) for x in read_lines(differential["spark"] / "goal4-topic.jsonl")]
    assert any(isinstance(x.get("avg(request_time)"), float) for x in avg)


def _rejected(line: bytes) -> bool:
    try:
        parse_line(line)
    except Rejected:
        return True
    return False


# each input file has them all; blank lines are not records
N_REJECTED = sum(map(_rejected, [x.encode() for x in INVALID_LINES] + BYTE_LINES))


def test_same_dead_letters(differential: dict) -> None:
    want = dead_letters(differential["replay"] / "rejected.jsonl")
    got = dead_letters(differential["spark"] / "rejected.jsonl")
    assert len(want) == 2 * N_REJECTED + len(LATE_LINES)
    assert {w[0] for w in want} >= {
        "invalid-utf8",
        "invalid-json",
        "not-an-object",
        "missing-timestamp",
        "invalid-timestamp",
        "invalid-status",
        "missing-status",
        "invalid-client_ip",
        "missing-client_ip",
        "invalid-host",
        "missing-host",
        "invalid-request_time",
        "invalid-country",
        "invalid-method",
        "invalid-server",
    }
    assert got == want


def test_late_records_are_dead_lettered_as_in_replay(differential: dict) -> None:
    """A record beyond the lateness is left out of each rule whose oldest window had closed at
    its arrival (per-record watermark) and dead-lettered once, with those rules, as replay does;
    the rules whose window was still open count it (the results above are identical)."""

    def late(engine: str) -> list[tuple]:
        return sorted(
            (d["raw"], tuple(d["rules"]), d["detail"])
            for d in map(json.loads, (differential[engine] / "rejected.jsonl").read_text().splitlines())
            if d["reason"] == "late"
        )

    want = late("replay")
    assert len(want) == len(LATE_LINES)
    assert any(len(rules) < len(RULE_NAMES) for _, rules, _ in want)  # late for some rules only
    assert late("spark") == want
    assert json.loads(differential["summary"].read_text())["late"] == len(LATE_LINES)


def test_utf8_twins(differential: dict) -> None:
    """Lines that differ only in their bytes: every reason code (and valid records) in good UTF-8,
    and the same lines in bytes that are not UTF-8, which both engines reject as invalid-utf8
    (Spark's text source would hand them over with U+FFFD in place of the bad bytes)."""
    for engine in ("replay", "spark"):
        letters = dead_letters(differential[engine] / "rejected.jsonl")
        bad = {w[3] for w in letters if w[0] == "invalid-utf8"}
        assert len([w for w in letters if w[0] == "invalid-utf8"]) == len(differential["twins"]), engine
        assert bad == {base64.b64encode(b).decode() for _, b in differential["twins"]}, engine
        good = {a.decode() for a, _ in differential["twins"]}
        assert not {w[2] for w in letters if w[0] == "late"} & good, engine  # the twins come in event-time order
        text = "".join(p.read_text() for p in differential[engine].glob("*-topic.jsonl"))
        assert "\ufffd" not in text and "\\ufffd" not in text, engine
        assert "\U0001f600x.example.com" in text, engine  # the good twin of a valid record counts
        assert "crlf.example.com" in text and "cr.example.com" in text, engine


def test_normalized_values(differential: dict) -> None:
    """Issue 20's values the contract normalizes (::FFFF:102:304 is 1.2.3.4, -0 is 0) come out of
    Spark as out of replay: the host of NORMALIZED_LINES averages 0.0, never -0.0."""
    for engine in ("replay", "spark"):
        norm = [json.loads(x) for x in read_lines(differential[engine] / "goal4-topic.jsonl") if "norm.example.com" in x]
        assert len(norm) == 2, engine  # one 1-minute window per input file
        assert all(x["avg(request_time)"] == 0.0 for x in norm), engine
        assert not any("-0" in json.dumps(x["avg(request_time)"]) for x in norm), engine


def test_summary(differential: dict) -> None:
    s = json.loads(differential["summary"].read_text())
    assert s["engine"] == "spark"
    assert s["rejected"] == 2 * N_REJECTED  # late records apart
    lines = sum(p.read_bytes().count(b"\n") for p in differential["inputs"])
    assert s["input_rows"] == lines  # blank lines are input rows too (and not records)
    assert s["late"] == len(LATE_LINES)
    assert s["results"]["goal1-topic"] == len(read_lines(differential["replay"] / "goal1-topic.jsonl"))


def test_unsupported_rules_are_refused(tmp_path: Path, lookout_cmd: list[str]) -> None:
    """Rules whose Spark results could differ are refused up front (exit 2), not run differently."""
    rules = tmp_path / "r.yaml"
    rules.write_text(
        "rules:\n  - {name: s, window: 1m, group_by: host, aggregate: sum(request_time), threshold: '> 5', emit: alert}\n"
    )
    data = tmp_path / "in.ndjson"
    data.write_text("")
    p = subprocess.run([*lookout_cmd, "spark", "--input", str(data), "--rules", str(rules)], capture_output=True, text=True)
    assert p.returncode == 2 and "alert on sum(request_time)" in p.stderr
    p = subprocess.run([*lookout_cmd, "spark", "--rules", str(rules)], capture_output=True, text=True)
    assert p.returncode == 2 and "either --input" in p.stderr
    for rule, said in [
        ("{name: u, window: 1m, group_by: host, aggregate: count, emit: update}", "emit: update is not supported"),
        ("{name: mn, window: 1m, group_by: host, aggregate: min(request_time), threshold: '< 1', emit: alert}", "alert on min"),
        ("{name: mx, window: 1m, group_by: host, aggregate: max(status), threshold: '> 499', emit: alert}", "alert on max"),
    ]:
        rules.write_text(f"rules:\n  - {rule}\n")
        p = subprocess.run([*lookout_cmd, "spark", "--input", str(data), "--rules", str(rules)], capture_output=True, text=True)
        assert p.returncode == 2 and said in p.stderr and "Traceback" not in p.stderr, (rule, p.stderr)


def test_a_record_from_2100_is_rejected_as_replay_rejects_it(tmp_path: Path, lookout_cmd: list[str]) -> None:
    """Issue 18's case through `lookout spark --input`: 3,000 records 0.1 s apart, ten minutes
    old, record 1,000 stamped in 2100. The future guard runs before withWatermark: the same
    rejection as replay (`future-timestamp`), nothing dropped late, the same results."""
    import time

    import orjson

    start = time.time() - 600
    lines = [
        orjson.dumps(
            {
                "@timestamp": f"{start + 0.1 * i:.3f}",
                "client_ip": f"10.1.{i % 4}.1",
                "host": f"h{i % 3}.example.com",
                "status": "404" if i % 6 == 0 else "200",
                "request_time": "0.12",
                "country": ["US", "DE"][i % 2],
            }
        )
        for i in range(3000)
    ]
    lines[999] = orjson.dumps({**orjson.loads(lines[999]), "@timestamp": "4102444800"})
    data = tmp_path / "poisoned.ndjson"
    data.write_bytes(b"\n".join(lines) + b"\n")
    p = subprocess.run(
        [*lookout_cmd, "replay", str(data), "--out", str(tmp_path / "replay"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    p = subprocess.run(
        [*lookout_cmd, "spark", "--input", str(data), "--out", str(tmp_path / "spark"), "--master", "local[2]", "--json"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["rejected"] == 1 and summary["late"] == 0  # nothing late: the future record never moved the watermark
    want = dead_letters(tmp_path / "replay" / "rejected.jsonl")
    assert [w[0] for w in want] == ["future-timestamp"] and "4102444800" in want[0][2]
    assert dead_letters(tmp_path / "spark" / "rejected.jsonl") == want
    for rule in ("goal1-topic", "goal2-topic", "goal3-topic", "goal4-topic"):
        got = read_lines(tmp_path / "spark" / f"{rule}.jsonl")
        assert got and got == read_lines(tmp_path / "replay" / f"{rule}.jsonl"), rule


def test_late_records_at_split_starts(tmp_path: Path, lookout_cmd: list[str]) -> None:
    """A chunk is parsed as several splits at once; a record at the very start of a split, 20 s
    behind the records before it (lateness 10 s), is late by the running maximum of the splits
    before its own, which its own split has not seen: replay dead-letters it, and so must Spark
    (the splits' summary rows carry that maximum to the stateful step)."""
    import orjson

    split = 8192
    start = 1_690_000_000.0
    lines = []
    size = 0
    boundary = split
    late_raw = []
    for i in range(1500):
        if size >= boundary:  # this line starts the next split: make it a late one
            x = orjson.dumps(
                {
                    "@timestamp": f"{start + i * 0.05 - 20:.3f}",
                    "client_ip": "10.9.9.9",
                    "host": "late.example.com",
                    "status": "404",
                }
            )
            late_raw.append(x.decode())
            lines.append(x)
            size += len(x) + 1
            boundary += split
        x = orjson.dumps(
            {
                "@timestamp": f"{start + i * 0.05:.3f}",
                "client_ip": f"10.0.0.{i % 5}",
                "host": f"h{i % 3}.example.com",
                "status": "404" if i % 4 == 0 else "200",
                "request_time": "0.1",
            }
        )
        lines.append(x)
        size += len(x) + 1
    data = tmp_path / "splits.ndjson"
    data.write_bytes(b"\n".join(lines) + b"\n")
    assert len(late_raw) >= 5
    p = subprocess.run(
        [*lookout_cmd, "replay", str(data), "--out", str(tmp_path / "replay"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    p = subprocess.run(
        [
            *lookout_cmd,
            "spark",
            "--input",
            str(data),
            "--out",
            str(tmp_path / "spark"),
            "--master",
            "local[2]",
            "--conf",
            f"spark.sql.files.maxPartitionBytes={split}",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    want = dead_letters(tmp_path / "replay" / "rejected.jsonl")
    assert sorted(w[2] for w in want if w[0] == "late") == sorted(late_raw)
    assert dead_letters(tmp_path / "spark" / "rejected.jsonl") == want
    for rule in ("goal1-topic", "goal2-topic", "goal3-topic", "goal4-topic"):
        assert read_lines(tmp_path / "spark" / f"{rule}.jsonl") == read_lines(tmp_path / "replay" / f"{rule}.jsonl"), rule


def test_bucket_labels_are_balanced_by_sparks_own_hash() -> None:
    """compile.balanced_labels computes Spark's hash() itself (a job on a fresh session cost ~5 s
    of start-up): it must be Spark's, or the buckets land unevenly on the state partitions."""
    from pyspark.sql import functions as F

    from lookout.spark.compile import _spark_hash_int, balanced_labels
    from lookout.spark.session import build_session

    spark = build_session("local[1]")
    try:
        rows = spark.range(-5000, 5000).select(F.col("id").cast("int").alias("x"), F.hash(F.col("id").cast("int")).alias("h"))
        assert [(x, _spark_hash_int(x)) for x, _ in rows.collect()] == [tuple(r) for r in rows.collect()]
        for buckets, parts in ((8, 2), (8, 4), (16, 3), (32, 16)):
            labels = balanced_labels(buckets, parts)
            placed = spark.createDataFrame([(x,) for x in labels], "x int").select(F.pmod(F.hash("x"), F.lit(parts)).alias("p"))
            per = [r.p for r in placed.collect()]
            assert len(set(labels)) == buckets
            assert max(per.count(p) for p in range(parts)) - min(per.count(p) for p in range(parts)) <= 1, (buckets, parts, per)
    finally:
        spark.stop()
