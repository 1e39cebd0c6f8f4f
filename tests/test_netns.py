"""Three hosts in network namespaces (veth + bridge, 100.64.0.x), one tailscaled emulator each,
nodes in TUN-like mode: the source of every connection is the peer's own tailnet address."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tsconsensus_cli import exit_codes

from .conftest import FAST_RAFT
from .netns import Hosts, netns_available

pytestmark = pytest.mark.skipif(netns_available() is not None, reason=str(netns_available()))

TAG = "tag:db"


def test_three_hosts_form_a_cluster_refuse_an_untagged_host_and_survive_a_cut(
    tmp_path: Path,
) -> None:
    with Hosts(tmp_path, 4, TAG, FAST_RAFT) as hosts:
        hosts.tailnet.set_tags("host4", [])  # on the tailnet, without the cluster tag
        for k in range(3):
            hosts.start(k, bootstrap_expect=3)
        leader = hosts.wait_leader([0, 1, 2])
        done = hosts.tsc(
            1,
            "exec",
            "--address",
            "100.64.0.3:6271",
            "--name",
            "set",
            "--args",
            '{"k": 1}',
            "--json",
        )
        assert done.returncode == 0, done.stderr + hosts.log(2)
        status = hosts.status(0, of=2)
        assert status is not None and len(status["members"]) == 3

        # The untagged host is refused on all three ports of every member.
        for k in range(3):
            address = hosts.addresses[k]
            refused = hosts.tsc(3, "exec", "--address", f"{address}:6271", "--name", "keys")
            assert refused.returncode == exit_codes.NOT_AUTHORIZED, refused.stderr
            monitor = hosts.tsc(3, "status", "--address", f"{address}:8081")
            assert monitor.returncode == exit_codes.NOT_AUTHORIZED, monitor.stderr
            closed = hosts.python(
                3,
                "import socket\n"
                f"s = socket.create_connection(('{address}', 6270), timeout=3)\n"
                "s.settimeout(2)\n"
                "try:\n    print(s.recv(1) == b'')\n"
                "except (ConnectionResetError, TimeoutError):\n    print(True)\n",
            )
            assert closed.strip() == "True", f"raft port of host{k + 1} kept the stranger"

        # Cutting the leader's link: it loses leadership, the other two go on.
        hosts.cut(leader)
        others = [k for k in range(3) if k != leader]
        new_leader = hosts.wait_leader(others, timeout=30)
        assert new_leader != leader
        after = hosts.tsc(
            others[0],
            "exec",
            "--address",
            f"{hosts.addresses[others[1]]}:6271",
            "--name",
            "set",
            "--args",
            '{"after_cut": true}',
        )
        assert after.returncode == 0, after.stderr
        deadline = time.monotonic() + 15
        old = None
        while time.monotonic() < deadline:
            old = hosts.status(leader)  # asked from inside its own namespace (self is allowed)
            if old is not None and old["state"] != "leader":
                break
            time.sleep(0.3)
        assert old is not None and old["state"] != "leader", old
