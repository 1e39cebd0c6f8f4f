"""Opt-in: a 1-node cluster against a real tailscaled, for users who have one.

Skipped unless both are set:

- ``TSC_REAL_TAILSCALED_SOCKET``: tailscaled's LocalAPI socket (e.g.
  ``/var/run/tailscale/tailscaled.sock``), in TUN or userspace-networking mode;
- ``TSC_REAL_TAILSCALED_TAG``: a tag this machine carries and *no other* online node does (the
  node founds a cluster of the tagged peers it finds), e.g. ``tag:tsc-test``.

Run it with ``bash scripts/test.sh tests/test_real_tailscaled.py``. It starts
``tsc node start`` on free ports with a state directory of its own, executes a command through
``tsc exec --config`` (TCP from the node's tailnet address in TUN mode, the admin socket in
userspace mode), reads it back and stops the node.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tsconsensus.testing.cluster import node_command

from .helpers import free_port, tsc_run, tsc_until_ok

SOCKET = os.environ.get("TSC_REAL_TAILSCALED_SOCKET", "")
TAG = os.environ.get("TSC_REAL_TAILSCALED_TAG", "")

pytestmark = pytest.mark.skipif(
    not (SOCKET and TAG),
    reason="set TSC_REAL_TAILSCALED_SOCKET and TSC_REAL_TAILSCALED_TAG to run against a real "
    "tailscaled",
)


def test_one_node_cluster_on_a_real_tailscaled(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        f'[cluster]\ntag = "{TAG}"\nsecret = "{os.urandom(16).hex()}"\n'
        f"[ports]\nraft = {free_port('')}\ncommand = {free_port('')}\n"
        f"monitor = {free_port('')}\n"
        f'[storage]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[tailnet]\nbackend = "localapi"\nsocket_path = "{SOCKET}"\n'
    )
    with open(tmp_path / "node.log", "ab") as out:
        proc = subprocess.Popen([*node_command(), str(config)], stdout=out, stderr=out)
    try:
        done = tsc_until_ok(
            "exec", "--config", str(config), "--name", "set", "--args", '{"real": true}', "--json",
            timeout=60,
            interval=0.5,
            what="a command committed on the node",
        )  # fmt: skip
        assert json.loads(done.stdout)["error"] is None
        read = tsc_run(
            "exec", "--config", str(config), "--name", "get", "--args", '{"key": "real"}'
        )
        assert read.returncode == 0 and read.stdout.strip() == "true", read.stdout + read.stderr
        stopped = tsc_run("node", "stop", "--config", str(config))
        assert stopped.returncode == 0, stopped.stderr
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
