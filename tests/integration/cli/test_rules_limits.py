"""Rules that cannot hurt (issue 20): every bad rules file is refused with exit 2 and the field
named — never a traceback, an out-of-memory or a run that silently emits nothing."""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookout.rules import MAX_RULES, MAX_WINDOWS_PER_RECORD, RulesError, load_rules_text


def _limit_memory() -> None:  # the child may not grow past 1 GiB: a bomb fails loudly, not the machine
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def lookout_rules(lookout_cmd: list[str], tmp_path: Path, text: str, timeout: float = 60) -> subprocess.CompletedProcess:
    f = tmp_path / "rules.yaml"
    f.write_text(text)
    return subprocess.run(
        lookout_cmd + ["rules", "--rules", str(f)], capture_output=True, text=True, timeout=timeout, preexec_fn=_limit_memory
    )


def alias_bomb(where: str) -> str:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    rule = {"name": "*a9", "filter": "{host: *a9}"}
    body = (
        f"  - name: {rule['name']}\n    window: 1s\n    group_by: host\n"
        if where == "name"
        else f"  - name: r\n    window: 1s\n    group_by: host\n    filter: {rule['filter']}\n"
    )
    return "bombs:\n" + "\n".join("  " + ln for ln in levels) + "\nrules:\n" + body


@pytest.mark.parametrize("where", ["name", "filter"])
def test_alias_bomb_is_refused(lookout_cmd, tmp_path, where):
    text = alias_bomb(where)
    assert len(text) < 1500
    t0 = time.monotonic()
    p = lookout_rules(lookout_cmd, tmp_path, text)
    assert p.returncode == 2, p.stderr[-500:]
    assert "alias" in p.stderr and "Traceback" not in p.stderr
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize(
    "text,needles",
    [
        (
            "rules: [{name: r, window: {size: 365d, hop: 1s}, group_by: host}]",
            ["window", "31,536,000 windows per record", f"limit is {MAX_WINDOWS_PER_RECORD:,}"],
        ),
        ("rules: [{name: r, window: {size: 1d, hop: 1ms}, group_by: host}]", ["window", "windows per record"]),
        ("rules: [{name: r, window: 99999999999999999999999999999, group_by: host}]", ["window"]),
        ("rules: [{name: r, window: .inf, group_by: host}]", ["window"]),
        ("rules: [{name: r, window: .nan, group_by: host}]", ["window"]),
        ("rules: [{name: r, window: {size: 1s, hop: -.inf}, group_by: host}]", ["window"]),
        ("rules: [{name: r, window: 400d, group_by: host}]", ["window", "366d"]),
        ("lateness: 99999999999999999999d\nrules: [{name: r, window: 1s, group_by: host}]", ["lateness"]),
        ("lateness: .inf\nrules: [{name: r, window: 1s, group_by: host}]", ["lateness"]),
        ("lateness: -5\nrules: [{name: r, window: 1s, group_by: host}]", ["lateness"]),
        ("lateness: '١٠s'\nrules: [{name: r, window: 1s, group_by: host}]", ["lateness"]),
        ("rules: [{name: r, window: 1s, group_by: host, threshold: .inf}]", ["threshold"]),
        ("rules: [{name: r, window: 1s, group_by: host, threshold: 'count > " + "9" * 400 + "'}]", ["threshold"]),
        ("rules: [{name: r, window: 1s, group_by: host, threshold: 'count > ١٠'}]", ["threshold"]),
        ("rules: [{name: r, window: 1s, group_by: host, threshold: 'count > １０'}]", ["threshold"]),
        ("rules: [{name: r, window: 1s, group_by: host, threshold: 'count > 1e300'}]", ["threshold"]),
        ("rules: [{name: r, window: 1s, group_by: host, threshold: [1, 2]}]", ["threshold"]),
        ("rules: [{name: r, window: 1s, group_by: host, filter: {request_time: 5-1}}]", ["filter", "empty"]),
        ("rules: [{name: r, window: 1s, group_by: host, filter: {request_time: .inf}}]", ["filter", "request_time"]),
        ("rules: [{name: r, window: 1s, group_by: host, filter: {request_time: '1.2.3-4'}}]", ["filter", "request_time"]),
        ("rules: [{name: r, window: 1s, group_by: host, filter: {status: 600}}]", ["filter", "100-599"]),
        ("rules: [{name: r, window: 1s, group_by: host, filter: {status: '500-400'}}]", ["filter", "empty"]),
        ("rules: [{name: r, window: 1s, group_by: host, filter: {status: '٤٠٤'}}]", ["filter", "status"]),
        ("rules: [{name: r, window: 1s, group_by: host, filter: {status: true}}]", ["filter", "status"]),
        ("rules: [{name: r, window: 1s, group_by: host, filter: {host: [[1]]}}]", ["filter", "host"]),
        ("rules: [{name: r, window: 1s, group_by: host, filter: {client_ip: 'fe80::1%eth0'}}]", ["filter", "client_ip"]),
        ("rules: [{name: [1], window: 1s, group_by: host}]", ["name"]),
        ("rules: [1, 2]", ["rules.0"]),
        ("rules: {a: 1}", ["rules"]),
        ("[" * 5000 + "]" * 5000, ["nested too deeply"]),
        ("rules: !!python/object:os.system [echo]", ["YAML"]),
    ],
)
def test_bad_numbers_and_ranges_exit_2_naming_the_field(lookout_cmd, tmp_path, text, needles):
    p = lookout_rules(lookout_cmd, tmp_path, text)
    assert p.returncode == 2, p.stderr[-800:]
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in p.stderr, (n, p.stderr)


def _many_rules(n: int) -> str:
    return "rules:\n" + "".join(f"  - {{name: r{i}, window: 1s, group_by: host}}\n" for i in range(n))


def test_sixty_thousand_rules_are_refused_fast(lookout_cmd, tmp_path):
    text = _many_rules(60_000)
    t0 = time.monotonic()
    p = lookout_rules(lookout_cmd, tmp_path, text, timeout=30)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "limit" in p.stderr
    assert time.monotonic() - t0 < 10


def test_rule_count_cap_counts_rules():
    with pytest.raises(RulesError, match=f"{MAX_RULES + 1:,} rules; the limit is {MAX_RULES:,}"):
        load_rules_text(_many_rules(MAX_RULES + 1))


def test_the_most_rules_allowed_validate_fast():
    text = _many_rules(MAX_RULES)
    t0 = time.perf_counter()
    rs = load_rules_text(text)
    assert len(rs.rules) == MAX_RULES
    assert time.perf_counter() - t0 < 5


def test_unreadable_rules_files(lookout_cmd, tmp_path):
    for path, _needle in [(tmp_path, "directory"), (Path("/dev/zero"), "limit")]:
        p = subprocess.run(
            lookout_cmd + ["rules", "--rules", str(path)], capture_output=True, text=True, timeout=30, preexec_fn=_limit_memory
        )
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-500:]
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"rules: [{name: caf\xe9, window: 1s, group_by: host}]")
    p = subprocess.run(lookout_cmd + ["rules", "--rules", str(bad)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "UTF-8" in p.stderr


def test_filters_read_client_ips_like_records():
    rs = load_rules_text("rules: [{name: r, window: 1s, group_by: host, filter: {client_ip: '::FFFF:1.2.3.4'}}]")
    assert rs.rules[0].filter.conditions == (("client_ip", ("1.2.3.4",)),)


# anything at all in a rule's fields: a RulesError (exit 2 with the field named), never another exception
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["1s", "365d", "1ms", "count > 10", "4xx", "5-1", "١٠", ".inf", "-1s", "0s", "1e400"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
rule_fields = st.sampled_from(["name", "window", "filter", "group_by", "aggregate", "threshold", "emit", "description"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(rule_fields, values, max_size=4), st.one_of(st.none(), values))
def test_any_rules_file_is_a_ruleset_or_a_rules_error(fields, lateness):
    rule = {"name": "r", "window": {"size": "20s", "hop": "1s"}, "group_by": "host", **fields}
    doc: dict = {"rules": [rule]}
    if lateness is not None:
        doc["lateness"] = lateness
    try:
        text = yaml.safe_dump(doc)
    except yaml.YAMLError:
        return
    try:
        load_rules_text(text)
    except RulesError:
        pass
