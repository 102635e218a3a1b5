"""The wheel works outside the checkout: built from a copy of the sources, installed into a fresh
venv in a temporary folder (dependencies from the shared venv, no download: tests/venvs.py), run
from another temporary folder with no PYTHONPATH."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.venvs import build_wheel, run, venv_with_shared_deps

PROBE = "dashboard/static/probe/app.js"  # a nested static file: package-data must reach it


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pkg")
    wheel = build_wheel(base, {PROBE: "// packaging probe\n"})
    venv, site = venv_with_shared_deps(base)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-index",
            "--no-cache-dir",
            f"{wheel}[kafka,elasticsearch]",
        ],
        cwd=base,
    )
    work = base / "elsewhere"
    work.mkdir()
    return {"wheel": wheel, "bin": venv / "bin", "site": site, "work": work}


def test_wheel_holds_package_data(installed: dict[str, Path]) -> None:
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "lookout/defaults/rules.yaml" in names
    assert "lookout/kibana/lookout.ndjson" in names
    assert f"lookout/{PROBE}" in names
    for f in ("index.html", "app.js", "app.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css", "vendor/uPlot.LICENSE"):
        assert f"lookout/dashboard/static/{f}" in names, f
    meta = zipfile.ZipFile(installed["wheel"]).read("lookout-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in meta


def test_installed_lookout_runs_outside_the_checkout(installed: dict[str, Path]) -> None:
    bin_, work = installed["bin"], installed["work"]
    where = run([str(bin_ / "python"), "-c", "import lookout; print(lookout.__file__)"], cwd=work).stdout.strip()
    assert Path(where).is_relative_to(installed["site"]), where
    static = run(
        [
            str(bin_ / "python"),
            "-c",
            "from importlib.resources import files; print(files('lookout').joinpath('" + PROBE + "').read_text())",
        ],
        cwd=work,
    ).stdout
    assert "packaging probe" in static
    kibana = run(
        [str(bin_ / "python"), "-c", "from lookout.kibana import saved_objects; print(len(saved_objects().splitlines()))"],
        cwd=work,
    ).stdout
    assert int(kibana) >= 5

    version = run([str(bin_ / "lookout"), "--version"], cwd=work).stdout
    assert version.strip() == "lookout, version 0.1.0"
    rules = run([str(bin_ / "lookout"), "rules"], cwd=work).stdout
    assert [r["name"] for r in yaml.safe_load(rules)["rules"]] == ["goal1-topic", "goal2-topic", "goal3-topic", "goal4-topic"]

    run([str(bin_ / "lookout"), "generate", "3000", "--out", "sample.ndjson"], cwd=work)
    out = run([str(bin_ / "lookout"), "replay", "sample.ndjson", "--out", "results", "--json", "--no-progress"], cwd=work)
    summary = json.loads(out.stdout)
    assert summary["records"] == 3000, summary
    assert (work / "results" / "goal3-topic.jsonl").stat().st_size > 0
    check = run([str(bin_ / "lookout"), "check", "--state-dir", "st"], cwd=work).stdout
    assert "all 3 checks passed" in check
