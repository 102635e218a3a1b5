"""Fresh virtual environments for the packaging and deployment tests, without any download.

A new venv gets a `.pth` pointing at a folder of symlinks to the shared venv's site-packages
*minus* lookout itself (its editable install, dist-info and .pth hooks are left out), so pip
can install a lookout wheel with `--no-index` and must still resolve every dependency the wheel
declares against what is there; the lookout it then imports is the wheel's, never a source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH, no LOOKOUT_* settings, no active venv: what a user's shell has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LOOKOUT_", "VIRTUAL_ENV", "PIP_"))}
    env["PATH"] = "/usr/bin:/bin"
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-3000:]}"
    return r


def build_wheel(dest: Path, extra_files: dict[str, str] | None = None) -> Path:
    """Build the wheel from a copy of the sources (the checkout stays clean), plus `extra_files`
    (path under src/lookout -> text) to prove that package data reaches the wheel."""
    src = dest / "src-copy"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    src.mkdir(parents=True)
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    for rel, text in (extra_files or {}).items():
        p = src / "src" / "lookout" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    dist = dest / "dist"
    run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(dist)], cwd=dest)
    wheels = list(dist.glob("lookout-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def venv_with_shared_deps(dest: Path) -> tuple[Path, Path]:
    """A new venv (no pip of its own) that sees the shared dependencies but not lookout.
    Returns (venv, its site-packages)."""
    venv = dest / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=dest)
    py = venv / "bin" / "python"
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=dest).stdout.strip())
    shared = Path(sysconfig.get_path("purelib"))
    deps = dest / "shared-deps"
    deps.mkdir()
    for entry in shared.iterdir():
        name = entry.name.lower()
        if name.startswith(("lookout", "__editable__", "_lookout")) or name.endswith(".pth") or name == "__pycache__":
            continue
        (deps / entry.name).symlink_to(entry)
    (site / "shared-deps.pth").write_text(str(deps) + "\n")  # pip comes along, for `python -m pip`
    return venv, site
