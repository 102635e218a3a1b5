"""One KEY=VALUE parser (`lookout.keyvalue`) for `--kafka-config` and Spark's `--conf`."""

from __future__ import annotations

import subprocess

import pytest

from lookout.errors import ConfigError
from lookout.keyvalue import REDACTED, parse_pairs


def test_pairs_keep_order_strip_and_allow_equals_in_values() -> None:
    got = parse_pairs(["a=1", " b = x=y ", "a=2", "empty="], "--conf")
    assert got == {"a": "2", "b": "x=y", "empty": ""} and list(got) == ["a", "b", "empty"]


@pytest.mark.parametrize("bad", ["novalue", "=x", "  =x"])
def test_a_malformed_pair_names_the_option_and_its_position(bad: str) -> None:
    with pytest.raises(ConfigError, match=rf"--conf '{bad}' \(argument 2\): expected KEY=VALUE"):
        parse_pairs(["ok=1", bad], "--conf")


def test_a_secret_looking_pair_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as e:
        parse_pairs(["password hunter2"], "--x", is_secret=lambda s: "password" in s)
    assert "hunter2" not in str(e.value) and REDACTED in str(e.value)


def test_spark_conf_uses_it(lookout_cmd: list[str], tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("pyspark")
    f = tmp_path / "in.ndjson"
    f.write_text("")
    p = subprocess.run(
        [*lookout_cmd, "spark", "--input", str(f), "--conf", "spark.ui.enabled=false", "--conf", "oops"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "error: --conf 'oops' (argument 2): expected KEY=VALUE" in p.stderr, p.stderr
