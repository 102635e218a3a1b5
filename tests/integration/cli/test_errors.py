"""Typed errors: the library raises `lookout.errors` kinds (never SystemExit, which no caller could
catch as an error); the command line turns them into `error: …` and exit code 2 for usage and
configuration, 1 for failures at run time, with no traceback."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from lookout.errors import ConfigError, DeliveryError, LookoutError, ServiceUnavailable, StateError

SRC = Path(__file__).resolve().parents[3] / "src" / "lookout"


def test_no_system_exit_in_library_code() -> None:
    """Read as code (ast), so docstrings and comments that mention SystemExit do not count."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] == "cli" or path.name == "__main__.py":
            continue  # the command line may end the process
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            if name == "SystemExit" or (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and (node.value.id, node.attr) in {("sys", "exit"), ("os", "_exit")}
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not offenders, "library code must raise lookout.errors instead:\n" + "\n".join(offenders)


def test_tail_source_with_a_bad_geoip_raises_a_config_error(tmp_path: Path) -> None:
    from lookout.sources.tail import TailSource

    bad = tmp_path / "not.mmdb"
    bad.write_bytes(b"not a database")
    with pytest.raises(ConfigError, match="--geoip"):
        TailSource(tmp_path / "access.log", log_format="combined", host="h", geoip=bad)


def test_elasticsearch_error_is_a_library_error_not_an_exit() -> None:
    from lookout.sinks.es_http import ElasticsearchConfigError, ElasticsearchError

    e = ElasticsearchError("gave up")
    assert isinstance(e, Exception) and isinstance(e, ServiceUnavailable) and isinstance(e, DeliveryError)
    assert not isinstance(e, SystemExit) and str(e) == "elasticsearch: gave up"
    assert issubclass(ElasticsearchConfigError, ConfigError)


def test_cli_maps_a_config_error_to_exit_2(lookout_cmd: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "not.mmdb"
    bad.write_bytes(b"not a database")
    log = tmp_path / "access.log"
    log.write_text("")
    p = subprocess.run(
        [
            *lookout_cmd,
            "run",
            "--tail",
            str(log),
            "--geoip",
            str(bad),
            "--duration",
            "1",
            "--state-dir",
            str(tmp_path / "state"),
            "--out",
            str(tmp_path / "out"),
            "--no-view",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert "error: --geoip" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_cli_maps_a_checkpoint_error_to_exit_2(lookout_cmd: list[str], tmp_path: Path) -> None:
    """A checkpoint written with other rules: the run refuses to resume, says why, exits 2 (the
    user must act: other rules need another state dir), like every unusable checkpoint."""
    common = ["--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "out"), "--no-view", "--seed", "1"]
    first = subprocess.run([*lookout_cmd, "run", "--duration", "2", *common], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    rules = tmp_path / "rules.yaml"
    shown = subprocess.run([*lookout_cmd, "rules"], capture_output=True, text=True, check=True).stdout
    rules.write_text(shown.replace("threshold: count > 10\n", "threshold: count > 11\n", 1))
    assert rules.read_text() != shown, "the test must change the rules"
    p = subprocess.run(
        [*lookout_cmd, "run", "--rules", str(rules), "--duration", "2", *common], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 2, p.stderr
    assert "error: checkpoint was written with different rules" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_kinds_share_one_base() -> None:
    for kind in (ConfigError, StateError, ServiceUnavailable, DeliveryError):
        assert issubclass(kind, LookoutError)
    assert issubclass(ConfigError, ValueError)  # option validation (pydantic, click) treats it as one
