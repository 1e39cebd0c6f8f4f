#!/usr/bin/env bash
# Set up a virtualenv, start a local 3-node cluster in the background (no Tailscale needed),
# run a few commands against it and show its status. Stop it with: .venv/bin/tsc dev down
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
DIR="${TSC_DEV_DIR:-.tsc-dev}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
TSC=.venv/bin/tsc
if [ -f "$DIR/cluster.json" ]; then
  "$TSC" dev down --dir "$DIR" >/dev/null || true
fi
set -x
"$TSC" dev up --nodes 3 --dir "$DIR"
"$TSC" exec --config "$DIR/node2.toml" --name set --args '{"greeting": "hello", "answer": 42}'
"$TSC" exec --config "$DIR/node3.toml" --name get --args '{"key": "greeting"}'
"$TSC" exec --config "$DIR/node1.toml" --name cas --args '{"key": "answer", "expected": 42, "value": 43}'
"$TSC" status --config "$DIR/node1.toml"
set +x
echo
echo "The cluster keeps running. Stop it with: $TSC dev down --dir $DIR"
