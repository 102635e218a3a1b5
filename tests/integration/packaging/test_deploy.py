"""deploy/: what can be checked without running containers (they cannot run on these machines).

- the compose file parses, and every `lookout …` command line in it is accepted by this CLI
  (`run` lines through `lookout check --dry-run`, the same options by construction; the others
  through click's own parser, in-process, without running anything);
- every LOOKOUT_* variable a lookout service sets is one that its command (or the library) reads;
  every ${VAR} the file interpolates is in deploy/env.example;
- services, ports, volumes, paths and health checks agree with each other;
- the Dockerfile is slim, non-root, has a HEALTHCHECK, and installs with deploy/install.sh, which
  is run here as a plain shell script into a fresh venv.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from lookout.cli import main
from tests.venvs import build_wheel, clean_env, venv_with_shared_deps

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
LOOKOUT_SERVICES = {name: s for name, s in SERVICES.items() if str(s.get("image", "")).startswith("lookout")}
CLI_SERVICES = {name: s for name, s in LOOKOUT_SERVICES.items() if "entrypoint" not in s}
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)(?::?[-?+][^}]*)?\}")


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def substitute(value: str) -> str:
    """${VAR:?msg} -> a stand-in value, as compose would with deploy/.env."""
    return INTERPOLATION.sub(lambda m: f"test-{m.group(1).lower()}", value)


def parse_cli(args: list[str]) -> tuple[click.Command, dict[str, Any]]:
    """click's parser on a command line, in-process: raises click.UsageError when it is refused."""
    group_ctx = click.Context(main, info_name="lookout")
    cmd = main.get_command(group_ctx, args[0])
    assert cmd is not None, f"unknown command {args[0]}"
    ctx = cmd.make_context(args[0], list(args[1:]), parent=group_ctx)
    return cmd, ctx.params


def option_value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def test_compose_topology() -> None:
    assert {"kafka", "elasticsearch", "kibana", "lookout", "producer", "spark-master", "spark-worker", "spark-driver"} <= set(
        SERVICES
    )
    kafka_env = env_of(SERVICES["kafka"])
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"] and not any("ZOOKEEPER" in k for k in kafka_env)
    assert not any("zookeeper" in name for name in SERVICES)
    cluster_id = kafka_env["CLUSTER_ID"]  # kafka-storage format refuses anything but a Uuid
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 and len(cluster_id) == 22
    es = SERVICES["elasticsearch"]
    assert es["image"].split(":")[1].startswith("8.")
    es_env = env_of(es)
    assert es_env["xpack.security.enabled"] == "true" and es_env["discovery.type"] == "single-node"
    assert INTERPOLATION.fullmatch(es_env["ELASTIC_PASSWORD"]), "the password comes from the environment"
    assert SERVICES["kibana"]["image"].split(":")[1] == es["image"].split(":")[1]
    assert SERVICES["producer"]["profiles"] == ["traffic"]
    assert all(SERVICES[s]["profiles"] == ["spark"] for s in ("spark-master", "spark-worker", "spark-driver"))
    assert "profiles" not in SERVICES["lookout"]


@pytest.mark.parametrize("name", sorted(CLI_SERVICES))
def test_lookout_command_lines_are_accepted(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    service = CLI_SERVICES[name]
    args = [substitute(a) for a in service["command"]]
    for k, v in env_of(service).items():
        monkeypatch.setenv(k, substitute(v))
    cmd, params = parse_cli(args)
    assert cmd.name == args[0]
    if args[0] in ("run", "check"):
        # check takes run's own parameters: `check --dry-run` validates the run line and its rules
        line = ["check", "--dry-run", *args[1:]] if args[0] == "run" else [*args, "--dry-run"]
        r = subprocess.run(
            [sys.executable, "-m", "lookout", *line],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **{k: substitute(v) for k, v in env_of(service).items()}},
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "✘" not in r.stdout


def test_a_refused_command_line_is_caught() -> None:
    """The parser used above does refuse what the CLI refuses (so the test above can fail)."""
    with pytest.raises(click.UsageError):
        parse_cli(["run", "--kafka", "kafka:9092", "--no-such-option"])
    with pytest.raises(click.UsageError):
        parse_cli(["produce", "--topic", "x"])  # --kafka missing


def _envvars_read(cmd: click.Command) -> set[str]:
    names = {p.envvar for p in [*main.params, *cmd.params] if isinstance(p.envvar, str)}
    for p in [*main.params, *cmd.params]:
        if isinstance(p.envvar, (list, tuple)):
            names |= set(p.envvar)
    # the library's own settings (sinks/es_http.py reads LOOKOUT_ES_TIMEOUT etc. directly)
    for f in (ROOT / "src" / "lookout").rglob("*.py"):
        names |= set(re.findall(r"environ(?:\.get)?[\[(]\s*\"(LOOKOUT_[A-Z0-9_]+)\"", f.read_text()))
    return names


@pytest.mark.parametrize("name", sorted(CLI_SERVICES))
def test_environment_names_are_read_by_the_command(name: str) -> None:
    service = CLI_SERVICES[name]
    cmd = main.commands[service["command"][0]]
    unknown = {k for k in env_of(service) if k.startswith("LOOKOUT_")} - _envvars_read(cmd)
    assert not unknown, f"{name} sets {unknown}, which `lookout {cmd.name}` never reads"


def test_interpolated_variables_are_documented_and_shared() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    used = set(INTERPOLATION.findall(text))
    example = {
        line.split("=", 1)[0] for line in (DEPLOY / "env.example").read_text().splitlines() if line and not line.startswith("#")
    }
    assert used == example
    # the password es-setup gives the `lookout` user is the one lookout logs in with
    assert env_of(SERVICES["es-setup"])["LOOKOUT_ES_PASSWORD"].startswith("${LOOKOUT_ES_PASSWORD")
    assert env_of(SERVICES["lookout"])["LOOKOUT_ES_PASSWORD"].startswith("${LOOKOUT_ES_PASSWORD")
    assert env_of(SERVICES["lookout"])["LOOKOUT_ES_USER"] == "lookout"
    setup = " ".join(SERVICES["es-setup"]["command"])
    assert "/_security/role/lookout_writer" in setup and "/_security/user/lookout " in setup
    assert '\\"roles\\":[\\"lookout_writer\\"]' in setup


def test_ports_volumes_and_addresses_agree() -> None:
    declared = set(COMPOSE["volumes"])
    used: set[str] = set()
    published: list[str] = []
    for name, s in SERVICES.items():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith((".", "/")):
                assert src in declared, f"{name}: volume {src} is not declared"
                used.add(src)
        for p in s.get("ports", []):
            ip, host_port, _container = str(p).split(":")
            assert ip == "127.0.0.1", f"{name}: {p} is published beyond loopback"
            published.append(host_port)
        deps = s.get("depends_on", {})
        for dep, cond in deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps):
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
    assert used == declared
    assert len(published) == len(set(published))

    kafka_env = env_of(SERVICES["kafka"])
    advertised = {urlsplit(u).netloc for u in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    listen_ports = {urlsplit(u).port for u in kafka_env["KAFKA_LISTENERS"].split(",")}
    for name, s in CLI_SERVICES.items():
        args = s["command"]
        if (bootstrap := option_value(args, "--kafka")) is not None:
            assert bootstrap in advertised and int(bootstrap.split(":")[1]) in listen_ports, f"{name}: {bootstrap}"
        if (es := option_value(args, "--elasticsearch")) is not None:
            assert urlsplit(es).hostname == "elasticsearch" and urlsplit(es).port == 9200
        mounts = [v.split(":")[1] for v in s.get("volumes", [])]
        for flag in ("--state-dir", "--out", "--checkpoint"):
            if (path := option_value(args, flag)) is not None:
                assert any(Path(path).is_relative_to(m) for m in mounts), f"{name}: {flag} {path} is not on a volume"
    assert "lookout-state:/var/lib/lookout" in SERVICES["lookout"]["volumes"]
    assert option_value(SERVICES["kibana-setup"]["command"], "kibana-setup") == "http://kibana:5601"
    master = SERVICES["spark-master"]["entrypoint"]
    assert option_value(master, "--host") == "spark-master"
    master_url = f"spark://spark-master:{option_value(master, '--port')}"
    assert option_value(SERVICES["spark-driver"]["command"], "--master") == master_url
    assert SERVICES["spark-worker"]["entrypoint"][-1] == master_url
    # the Spark entry point comes with pyspark (the lookout-spark image installs lookout[spark])
    assert (Path(sys.executable).parent / "spark-class").exists()
    assert "spark-checkpoint:/var/lib/lookout" in SERVICES["spark-worker"]["volumes"]


def test_health_checks_use_healthz() -> None:
    lookout = SERVICES["lookout"]
    assert "http://127.0.0.1:8080/healthz" in " ".join(lookout["healthcheck"]["test"])
    for name, s in LOOKOUT_SERVICES.items():
        if name != "lookout":
            assert s["healthcheck"] == {"disable": True}, f"{name} serves no /healthz: the image's check must be off"
    docker = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"HEALTHCHECK .*\n.*http://127\.0\.0\.1:8080/healthz", docker)


def test_dockerfile_shape() -> None:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, list[str]] = {}
    current = ""
    for ln in text.splitlines():
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", ln)
        if m:
            current = m.group(2) or m.group(1)
            stages[current] = [ln]
        elif current and ln.strip() and not ln.startswith("#"):
            stages[current].append(ln)
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim", text)
    assert set(stages) == {"build", "lookout", "lookout-spark"}
    for stage in ("lookout", "lookout-spark"):
        users = [ln.split()[1] for ln in stages[stage] if ln.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), f"{stage} runs as root"
    install = [ln for ln in stages["lookout"] if ln.startswith("RUN") and "lookout-install" in ln]
    assert install and "COPY deploy/install.sh /usr/local/bin/lookout-install" in stages["lookout"]
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)  # type: ignore[union-attr]
    assert f"/dist/lookout-{version}-py3-none-any.whl" in install[0]
    assert any(ln.startswith("HEALTHCHECK") for ln in stages["lookout"])
    assert 'ENTRYPOINT ["lookout"]' in stages["lookout"]


def test_install_script_in_a_fresh_venv(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    venv, site = venv_with_shared_deps(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    r = subprocess.run(
        ["sh", str(DEPLOY / "install.sh"), str(wheel), "kafka,elasticsearch"],
        cwd=work,
        env=clean_env(LOOKOUT_VENV=str(venv), PIP_NO_INDEX="1", PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lookout, version 0.1.0" in r.stdout and f"lookout installed in {venv}" in r.stdout
    assert list(site.glob("lookout-0.1.0.dist-info"))
    help_ = subprocess.run(
        [str(venv / "bin" / "lookout"), "kibana-setup", "--help"],
        cwd=work,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_.returncode == 0 and "Import lookout's data views" in help_.stdout
    missing = subprocess.run(
        ["sh", str(DEPLOY / "install.sh"), str(tmp_path / "nope.whl")],
        cwd=work,
        env=clean_env(LOOKOUT_VENV=str(venv)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "no such wheel" in missing.stderr
