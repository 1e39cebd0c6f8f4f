"""A whole cluster in userspace-networking mode: three hosts in network namespaces, each with a
tailscaled emulator playing userspace mode. The tailnet addresses exist on no interface (the
bridge carries only the emulators' wire), so the cluster forms only if every Raft, command and
monitor connection is dialled through tailscaled: the LocalAPI ``dial`` upgrade (hosts 1 and 2)
or its SOCKS5 proxy (host 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsconsensus import NodeClient

from .conftest import FAST_RAFT
from .helpers import eventually
from .netns import Hosts, netns_available

pytestmark = pytest.mark.skipif(netns_available() is not None, reason=str(netns_available()))

TAG = "tag:db"

PROBE = """
import json, socket
from tsconsensus.localapi import LocalAPIClient
client = LocalAPIClient({sock!r})
out = {{}}
for host in {hosts!r}:
    for port in (6271, 8081):
        try:
            s = client.dial(host, port, timeout=5)
            s.settimeout(5)
            s.sendall(b"GET /v1/status HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 0\\r\\n\\r\\n")
            out[f"{{host}}:{{port}}"] = s.recv(64).split(b"\\r\\n")[0].decode()
        except OSError as exc:
            out[f"{{host}}:{{port}}"] = f"error {{exc}}"
    try:
        s = client.dial(host, 6270, timeout=5)
        s.settimeout(5)
        out[f"{{host}}:6270"] = repr(s.recv(1))
    except ConnectionResetError:
        out[f"{{host}}:6270"] = "reset"
    except OSError as exc:
        out[f"{{host}}:6270"] = f"error {{exc}}"
print(json.dumps(out))
"""


def _exec(hosts: Hosts, k: int, args: str) -> dict[str, object]:
    done = hosts.tsc(
        k, "exec", "--config", str(hosts.config_path(k)), "--name", "set", "--args", args, "--json"
    )
    assert done.returncode == 0, done.stderr + hosts.log(k)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_three_userspace_hosts_form_a_cluster_refuse_strangers_and_survive_a_partition(
    tmp_path: Path,
) -> None:
    # host3 dials through its tailscaled's SOCKS5 proxy, the others with the LocalAPI dial
    with Hosts(tmp_path, 4, TAG, FAST_RAFT, userspace=True, socks5_hosts=[2]) as hosts:
        hosts.tailnet.set_tags("host4", [])  # on the tailnet, without the cluster tag
        for k in range(3):
            hosts.start(k, bootstrap_expect=3)
        leader = hosts.wait_leader([0, 1, 2], timeout=40)

        # A command on any node commits (tsc --config uses the host's admin socket).
        for k in range(3):
            assert _exec(hosts, k, json.dumps({f"from{k}": k}))["error"] is None
        status = hosts.status(leader)
        assert status is not None and len(status["members"]) == 3
        assert all(m["connected"] for m in status["members"] if m["id"] != status["node_id"])
        # tsc status on a host asks its own node through the admin socket and the other
        # members through the host's tailscaled: every member answers.
        for k in (0, 2):  # LocalAPI dial, and SOCKS5
            shown = hosts.tsc(k, "status", "--config", str(hosts.config_path(k)), "--json")
            assert shown.returncode == 0, shown.stdout + shown.stderr
            view = json.loads(shown.stdout)
            assert len(view["nodes"]) == 3 and all(n["reachable"] for n in view["nodes"]), view
        # tsc doctor there too: the node through its admin socket, the peers through tailscaled
        doctor = hosts.tsc(0, "doctor", "--config", str(hosts.config_path(0)))
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "userspace networking" in doctor.stdout and "running here as member" in doctor.stdout
        assert doctor.stdout.count("raft port and monitor answer") == 2, doctor.stdout
        # Every host dialled its peers through its tailscaled, and the tailnet addresses are
        # not routable from the hosts: nothing could have gone around it.
        assert hosts.emulators[0].dials > 0 and hosts.emulators[1].dials > 0
        assert hosts.emulators[2].dials == 0 and hosts.emulators[2].netstack.socks5_connections > 0
        direct = hosts.python(
            0,
            "import socket\n"
            "try:\n"
            "    socket.create_connection(('100.64.0.2', 6271), timeout=2)\n"
            "    print('connected')\n"
            "except OSError as exc:\n"
            "    print('unreachable')\n",
        )
        assert direct.strip() == "unreachable"

        # The untagged host, dialling through its own tailscaled, is refused on every port
        # of every member; so is a local process on a member's host (not a tailnet peer).
        hosts.emulator(3)
        probe = PROBE.format(sock=str(hosts.socket_path(3)), hosts=hosts.addresses[:3])
        answers = json.loads(hosts.python(3, probe))
        for k in range(3):
            address = hosts.addresses[k]
            assert answers[f"{address}:6271"].startswith("HTTP/1.1 403"), answers
            assert answers[f"{address}:8081"].startswith("HTTP/1.1 403"), answers
            assert answers[f"{address}:6270"] in ("b''", "reset"), answers
        local = hosts.python(
            0,
            "import httpx\n"
            "print(httpx.get('http://127.0.0.1:6271/v1/status', timeout=5).status_code)\n",
        )
        assert local.strip() == "403"

        # Partition: the leader's wire is cut; the other two elect a leader and go on, the old
        # one steps down; after the heal it catches up.
        hosts.cut(leader)
        others = [k for k in range(3) if k != leader]
        new_leader = hosts.wait_leader(others, timeout=30)
        assert new_leader != leader
        assert _exec(hosts, others[0], '{"after_cut": true}')["error"] is None

        def stepped_down() -> bool:
            old = hosts.status(leader)
            return old is not None and old["state"] != "leader"

        eventually(stepped_down, timeout=20, interval=0.3, what="the cut-off leader steps down")
        hosts.heal(leader)

        def caught_up() -> bool:
            with NodeClient(f"unix:{hosts.admin_socket(leader)}", timeout=3) as client:
                return client.execute("get", {"key": "after_cut"}, timeout=3).result is True

        eventually(caught_up, timeout=30, interval=0.3, what="the healed node reads the write")
        assert _exec(hosts, leader, '{"healed": true}')["error"] is None

        # host4, tagged now, joins through its tailscaled: its join comes from 127.0.0.1 on
        # the members' hosts and is accepted as its own tailnet address (whois names it).
        hosts.tailnet.set_tags("host4", [TAG])
        hosts.start(3)

        def four_members() -> bool:
            status = hosts.status(3)
            return status is not None and len(status["members"]) == 4

        eventually(four_members, timeout=40, interval=0.3, what="host4 joins the cluster")
        assert _exec(hosts, 3, '{"fourth": true}')["error"] is None
