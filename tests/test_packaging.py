"""The wheel works outside the checkout: built from a copy of the sources, installed into a fresh
venv in a temporary folder, run from another temporary folder with no PYTHONPATH.

Dependencies come from the shared venv without downloading anything: a fresh venv gets a `.pth`
pointing at a folder of symlinks to the shared site-packages *minus* lookout itself (its
editable install, dist-info and .pth hooks are left out), and pip installs the wheel with
`--no-index`, so it must still resolve every declared dependency against what is there. The
test then checks that `lookout` is imported from the new venv, never from a source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROBE = "dashboard/static/probe/app.js"  # a nested static file: package-data must reach it


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LOOKOUT_", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/bin:/bin"
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pkg")
    src = base / "src-copy"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    src.mkdir()
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    probe = src / "src" / "lookout" / PROBE
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text("// packaging probe\n")
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(dist)], cwd=base)
    wheels = list(dist.glob("lookout-*.whl"))
    assert len(wheels) == 1, wheels

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        text=True, env=_clean_env()).strip())
    shared = Path(sysconfig.get_path("purelib"))
    deps = base / "shared-deps"
    deps.mkdir()
    for entry in shared.iterdir():
        name = entry.name.lower()
        if name.startswith(("lookout", "__editable__", "_lookout")) or name.endswith(".pth") or name == "__pycache__":
            continue
        (deps / entry.name).symlink_to(entry)
    (site / "shared-deps.pth").write_text(str(deps) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index", "--no-cache-dir",
          f"{wheels[0]}[kafka,elasticsearch]"], cwd=base)
    work = base / "elsewhere"
    work.mkdir()
    return {"wheel": wheels[0], "bin": venv / "bin", "site": site, "work": work}


def test_wheel_holds_package_data(installed: dict[str, Path]) -> None:
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "lookout/defaults/rules.yaml" in names
    assert f"lookout/{PROBE}" in names
    meta = zipfile.ZipFile(installed["wheel"]).read("lookout-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in meta


def test_installed_lookout_runs_outside_the_checkout(installed: dict[str, Path]) -> None:
    bin_, work = installed["bin"], installed["work"]
    where = _run([str(bin_ / "python"), "-c", "import lookout; print(lookout.__file__)"], cwd=work).stdout.strip()
    assert Path(where).is_relative_to(installed["site"]), where
    static = _run([str(bin_ / "python"), "-c",
                   "from importlib.resources import files; print(files('lookout').joinpath('" + PROBE + "').read_text())"],
                  cwd=work).stdout
    assert "packaging probe" in static

    version = _run([str(bin_ / "lookout"), "--version"], cwd=work).stdout
    assert version.strip() == "lookout, version 0.1.0"
    rules = _run([str(bin_ / "lookout"), "rules"], cwd=work).stdout
    assert [r["name"] for r in yaml.safe_load(rules)["rules"]] == ["goal1-topic", "goal2-topic", "goal3-topic", "goal4-topic"]

    _run([str(bin_ / "lookout"), "generate", "3000", "--out", "sample.ndjson"], cwd=work)
    out = _run([str(bin_ / "lookout"), "replay", "sample.ndjson", "--out", "results", "--json", "--no-progress"], cwd=work)
    summary = json.loads(out.stdout)
    assert summary["records"] == 3000, summary
    assert (work / "results" / "goal3-topic.jsonl").stat().st_size > 0
