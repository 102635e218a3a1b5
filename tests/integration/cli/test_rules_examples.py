"""The example rules of docs/rules.md, run by `lookout replay` over 10,000 real combined-format lines
(tests/data/apache_logs.gz), each result checked against a plain reading of those lines."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from lookout.rules import load_rules_text
from lookout.sources.nginx import LineConverter

DOC = Path(__file__).resolve().parents[3] / "docs" / "rules.md"


def doc_rules() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/rules.md holds one rules file"
    return blocks[0]


def minute(ts: datetime) -> str:
    return datetime.fromtimestamp(int(ts.timestamp()) // 60 * 60, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@pytest.fixture(scope="module")
def replayed(apache_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    d = tmp_path_factory.mktemp("examples")
    (d / "rules.yaml").write_text(doc_rules())
    src = d / "access.ndjson"
    src.write_bytes(LineConverter("combined", host="web-1").convert(apache_logs.read_bytes())[0])
    # Apache stamps a line when its request starts: lines are out of order by up to 59 s
    args = ["replay", str(src), "--rules", str(d / "rules.yaml"), "--lateness", "2m", "--out", str(d / "out"), "--json"]
    summary = orjson.loads(
        subprocess.run([str(Path(sys.executable).parent / "lookout"), *args], capture_output=True, check=True, timeout=300).stdout
    )
    assert summary["records"] == 10_000 and summary["rejected"] == 0 and summary["late"] == 0, summary
    rs = load_rules_text(doc_rules())
    return {r.name: [orjson.loads(x) for x in (d / "out" / f"{r.name}.jsonl").read_bytes().splitlines()] for r in rs.rules}


def plain(apache_logs: Path) -> list[tuple[str, str, int, str | None, int | None]]:
    """(minute, client, status, path, bytes) of each line, read with split and strptime."""
    out = []
    for line in apache_logs.read_text(errors="replace").splitlines():
        before, request, after = line.split('"', 2)[0], line.split('"')[1], line.split('"')[2]
        ts = datetime.strptime(before[before.index("[") + 1 : before.index("]")], "%d/%b/%Y:%H:%M:%S %z")
        words = request.split(" ")
        status, sent = after.split()[:2]
        path = words[1] if len(words) > 1 and words[1] not in ("", "-") else None
        out.append((minute(ts), before.split()[0], int(status), path, None if sent == "-" else int(sent)))
    return out


def test_the_docs_hold_the_two_examples() -> None:
    rs = load_rules_text(doc_rules())
    assert [(r.name, r.group_by, r.aggregate) for r in rs.rules] == [
        ("not-found-per-path", ("path",), "count"),
        ("bytes-per-client", ("client_ip",), "sum(bytes)"),
    ]


def test_404s_per_path_per_minute(replayed: dict, apache_logs: Path) -> None:
    want = Counter((m, path) for m, _, status, path, _ in plain(apache_logs) if status == 404 and path is not None)
    got = {(r["window"]["start"], r["path"]): r["count"] for r in replayed["not-found-per-path"]}
    assert len(want) > 50 and got == dict(want)


def test_bytes_served_per_client_per_minute(replayed: dict, apache_logs: Path) -> None:
    want: dict[tuple[str, str], int | None] = defaultdict(lambda: None)
    for m, client, _, _, sent in plain(apache_logs):
        prev = want[(m, client)]
        want[(m, client)] = prev if sent is None else (prev or 0) + sent
    got = {(r["window"]["start"], r["client_ip"]): r.get("sum(bytes)") for r in replayed["bytes-per-client"]}
    assert got == dict(want)
    assert sum(v for v in got.values() if v) > 1_000_000_000 and any(v is None for v in got.values())  # `-` only: no sum
