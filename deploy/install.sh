#!/bin/sh
# Install a lookout wheel into a virtual environment: the Dockerfile's install step, and the same
# steps by hand on a host. Usage: install.sh WHEEL [EXTRAS]
#   LOOKOUT_VENV  the venv (default /opt/lookout); an existing one is reused, not recreated.
#   PIP_*         pip's own settings pass through (PIP_INDEX_URL, PIP_NO_INDEX, PIP_FIND_LINKS, ...).
# Ends by running the installed `lookout --version` and `lookout rules --check` (the default
# rules ship inside the wheel), so a broken install fails the image build, not the first run.
set -eu
wheel=${1:?usage: install.sh WHEEL [EXTRAS]}
extras=${2:-kafka,elasticsearch}
venv=${LOOKOUT_VENV:-/opt/lookout}
python=${PYTHON:-python3}

[ -f "$wheel" ] || { echo "install.sh: no such wheel: $wheel" >&2; exit 2; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check "$wheel[$extras]"
"$venv/bin/lookout" --version
"$venv/bin/lookout" rules --check
echo "lookout installed in $venv ($extras)"
