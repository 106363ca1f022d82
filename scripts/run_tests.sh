#!/usr/bin/env bash
# Sets up .venv/ if needed (see scripts/setup_env.sh), then runs the test suite on the CPU.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -k focal -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest "$@"
