#!/usr/bin/env bash
# Set up a virtualenv with the dev extras, then lint, type-check and run the test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m soak, scripts/test.sh -k cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
.venv/bin/ruff check tsconsensus commands tests examples bench
.venv/bin/mypy
# Two worker processes (most tests wait on real clusters, not on a core); soak runs share one
# xdist group, so they run one at a time. "-n 0" after this runs everything in one process.
exec .venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
