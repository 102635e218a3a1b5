"""`lookout replay` writes incidents.jsonl: one incident per connected run of a key's alert rows."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from datetime import datetime


def _us(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1_000_000)


def test_replay_writes_incidents_matching_the_alert_rows(lookout_cmd, tmp_path):
    data = tmp_path / "g.ndjson"
    subprocess.run(lookout_cmd + ["generate", "40000", "--out", str(data)], check=True)
    out = tmp_path / "out"
    p = subprocess.run(
        lookout_cmd + ["replay", str(data), "--out", str(out), "--json"], capture_output=True, text=True, check=True
    )
    summary = json.loads(p.stdout)
    lines = [json.loads(x) for x in (out / "incidents.jsonl").read_text().splitlines()]
    assert lines, "the generated traffic has bursts"
    for rule in ("goal1-topic", "goal2-topic"):
        rows = [json.loads(x) for x in (out / f"{rule}.jsonl").read_text().splitlines()]
        field = "client_ip" if rule == "goal1-topic" else "host"
        per_key = defaultdict(list)
        for r in rows:
            per_key[r[field]].append((_us(r["window"]["start"]), _us(r["window"]["end"])))
        want = []
        for key, wins in per_key.items():  # the definition, on the rows the rule emitted
            run = None
            for s, e in sorted(wins):
                if run and s <= run[2]:
                    run[2], run[3] = max(run[2], e), run[3] + 1
                else:
                    if run:
                        want.append(tuple(run))
                    run = [key, s, e, 1]
            want.append(tuple(run))
        mine = [x for x in lines if x["rule"] == rule]
        got = [(x["key"][field], _us(x["start"]), _us(x["end"]), x["windows"]) for x in mine if x["status"] == "resolved"]
        assert sorted(got) == sorted(want)
        assert len(rows) > 3 * len(want)  # the point: far fewer lines than window rows
        firing = {x["id"] for x in mine if x["status"] == "firing"}
        assert firing == {x["id"] for x in mine if x["status"] in ("resolved", "merged")}
        assert summary["incidents"][rule]["firing"] == len(firing)
        for x in mine:
            assert x["peak"] >= x["value"] > (10 if rule == "goal1-topic" else 15)
