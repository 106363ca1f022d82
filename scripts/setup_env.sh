#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv/ and installs everything
# retina_plugin needs, including the plugin itself in editable mode.
#
#   bash scripts/setup_env.sh          # idempotent: seconds when .venv is already complete
#
# detectron2 has no official PyPI release; the wheel that installs on these machines is
# `sal-detectron2` (a build of upstream main), which only installs on Python 3.10.
# Users who already have detectron2 built from source: see README ("Using your own detectron2").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.retina_plugin_setup_complete"
# What the venv was made from: a changed requirements.txt or setup.py brings it up to date.
SETUP_HASH="$(cat "$ROOT/requirements.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SETUP_HASH" ] \
   && "$VENV/bin/python" -c "import detectron2, retina_plugin" >/dev/null 2>&1; then
  echo "[setup] .venv is complete ($VENV)"
  exit 0
fi

find_python310() {
  if command -v python3.10 >/dev/null 2>&1 && python3.10 -c "import sys; assert sys.version_info[:2] == (3, 10)" >/dev/null 2>&1; then
    command -v python3.10; return 0
  fi
  if command -v pyenv >/dev/null 2>&1; then
    local root cand
    root="$(pyenv root)"
    for cand in "$root"/versions/3.10*/bin/python3.10; do
      if [ -x "$cand" ]; then echo "$cand"; return 0; fi
    done
  fi
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  if ! PY310="$(find_python310)"; then
    echo "[setup] ERROR: Python 3.10 is required but was not found." >&2
    echo "[setup] The only detectron2 build on PyPI (sal-detectron2) is a Python 3.10 wheel." >&2
    echo "[setup] Install Python 3.10 (e.g. 'pyenv install 3.10') and re-run this script." >&2
    exit 1
  fi
  echo "[setup] creating $VENV with $PY310"
  "$PY310" -m venv "$VENV"
fi

PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
echo "[setup] installing torch, torchvision, detectron2 and friends (first time: a few minutes)"
"${PIP[@]}" "setuptools<81" wheel
"${PIP[@]}" -r "$ROOT/requirements.txt"
echo "[setup] installing retina_plugin (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"
"$VENV/bin/python" -W ignore::FutureWarning -c "import detectron2, retina_plugin; print('[setup] detectron2', detectron2.__version__, '| retina_plugin', retina_plugin.__version__)"
echo "$SETUP_HASH" > "$STAMP"
