"""The native engine on real node processes: hostile frames, the cluster secret, a slow or
restarting tailscaled, identity and rejoining, snapshots moving to new members."""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tsconsensus.raft.frames import HELLO_BYTES, FrameKind, encode_header
from tsconsensus.testing import LocalCluster, node_command

from .conftest import unique_loopback_base
from .helpers import (
    assert_all_equal,
    converged_hashes,
    eventually,
    http,
    leader_silences,
    warnings_logged,
)

Make = Callable[..., LocalCluster]


def _leader_term(cluster: LocalCluster) -> tuple[int, int]:
    leader = cluster.wait_for_leader()
    return leader, int(cluster.status(leader)["term"])


def test_a_frame_declaring_2_gb_is_refused_at_once_and_the_leader_keeps_its_term(
    make_cluster: Make,
) -> None:
    cluster = make_cluster(3)
    leader, term = _leader_term(cluster)
    member = next(i for i in range(3) if i != leader)
    target = (cluster.addresses[leader], cluster.ports.raft)
    started = time.monotonic()
    with socket.create_connection(
        target, timeout=5, source_address=(cluster.addresses[member], 0)
    ) as s:
        s.settimeout(5)
        hello = s.recv(HELLO_BYTES)  # a member address: authorized and greeted
        assert hello.startswith(b"TSCH")
        header = encode_header(FrameKind.RAFT, 2**31, 1, 1, 2)
        s.sendall(header + b"\0" * 16)
        assert s.recv(1) == b""  # closed without reading a body
    assert time.monotonic() - started < 2.0
    for n in range(5):
        assert cluster.execute(n % 3, "set", {f"after{n}": n}).error is None
    assert _leader_term(cluster) == (leader, term)


def test_a_pickle_frame_under_a_mac_derived_from_the_tag_executes_nothing(
    make_cluster: Make, tmp_path: Path
) -> None:
    import hashlib
    import struct

    from tsconsensus.authorization import cluster_password

    cluster = make_cluster(3)
    leader, term = _leader_term(cluster)
    canary = tmp_path / "canary"

    class Bomb:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {canary}",))

    # what an attacker who knows only the tag could forge: pysyncobj's frames under the old
    # engine's MAC (keyed BLAKE2b with a key derived from the tag and an empty secret)
    key = hashlib.sha256(
        b"tsconsensus-raft-frame\0" + cluster_password(cluster.cluster_tag).encode()
    ).digest()
    header = struct.pack(">BQ", 1, int(time.time()))
    body = pickle.dumps(Bomb())
    mac = hashlib.blake2b(header, key=key, digest_size=32)
    mac.update(body)
    forged = header + mac.digest() + body
    member = next(i for i in range(3) if i != leader)
    for payload in (forged, encode_header(FrameKind.RAFT, len(forged), 1, 1, 2) + forged):
        with socket.create_connection(
            (cluster.addresses[leader], cluster.ports.raft),
            timeout=5,
            source_address=(cluster.addresses[member], 0),
        ) as s:
            s.settimeout(5)
            s.recv(HELLO_BYTES)
            s.sendall(payload)
            try:
                while s.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    assert cluster.execute(member, "set", {"still": "fine"}).error is None
    assert not canary.exists()
    assert _leader_term(cluster) == (leader, term)


def test_a_node_with_an_empty_secret_refuses_to_start_unless_told_it_is_insecure(
    make_cluster: Make,
) -> None:
    cluster = make_cluster(1, start=False, secret="")
    cluster.write()
    cluster.start_node(0)
    eventually(lambda: not cluster.running(0), 20, what="the node to exit")
    log = cluster.log_path(0).read_text()
    assert "cluster.secret" in log and "insecure_no_secret" in log
    assert "Traceback" not in log
    insecure = make_cluster(
        1, start=False, secret="", cluster_overrides={"insecure_no_secret": True}
    )
    insecure.start(timeout=30)
    log = insecure.log_path(0).read_text()
    assert log.count("forge Raft traffic") == 1
    assert insecure.execute(0, "set", {"k": 1}).error is None


def test_tsc_dev_up_writes_a_random_secret(tmp_path: Path) -> None:
    from tsconsensus.config import Config

    first = LocalCluster(tmp_path / "a", nodes=2, base_address=unique_loopback_base())
    second = LocalCluster(tmp_path / "b", nodes=2, base_address=unique_loopback_base())
    first.write()
    second.write()
    secrets = {Config.load(c.config_path(0)).cluster.secret for c in (first, second)}
    assert len(secrets) == 2 and all(len(s) >= 32 for s in secrets)
    assert Config.load(first.config_path(1)).cluster.secret in secrets


def test_a_slow_tailscaled_does_not_cost_the_leader_its_term(make_emulated: Make) -> None:
    cluster = make_emulated(3)
    leader, term = _leader_term(cluster)
    for emulator in cluster._emulators.values():
        emulator.delay_s = 2.0
    deadline = time.monotonic() + 8
    n = 0
    while time.monotonic() < deadline:  # keep the cluster busy while tailscaled crawls
        assert cluster.execute(n % 3, "set", {f"slow{n}": n}).error is None
        n += 1
    for emulator in cluster._emulators.values():
        emulator.delay_s = 0.0
    assert _leader_term(cluster) == (leader, term)


def test_tailscaled_restarting_does_not_drop_quorum(make_emulated: Make) -> None:
    cluster = make_emulated(3)
    leader, term = _leader_term(cluster)
    for emulator in cluster._emulators.values():
        emulator.stop()
    try:
        time.sleep(3.0)  # longer than the tag refresh: refreshes fail meanwhile
        assert cluster.status(leader)["has_quorum"]
        assert cluster.execute(leader, "set", {"during": "restart"}).error is None
    finally:
        for emulator in cluster._emulators.values():
            emulator.start()
    assert _leader_term(cluster) == (leader, term)
    assert cluster.execute(0, "get", {"key": "during"}).result == "restart"


def test_a_wiped_node_rejoins_as_a_new_member_and_its_old_id_cannot_come_back(
    make_emulated: Make,
) -> None:
    cluster = make_emulated(3)
    leader = cluster.wait_for_leader()
    victim = next(i for i in range(3) if i != leader)
    old_id = cluster.node_id(victim)
    for n in range(20):
        assert cluster.execute(leader, "set", {f"k{n}": n}).error is None
    cluster.stop_node(victim, kill=True)
    shutil.rmtree(cluster.state_dir(victim))  # its disk is gone
    cluster.start_node(victim)
    cluster.wait_ready(among=[victim], timeout=30)
    new_id = cluster.node_id(victim)
    assert new_id != old_id
    ids = eventually(
        lambda: (
            [m["id"] for m in cluster.status(leader)["members"]]
            if len(cluster.status(leader)["members"]) == 4
            else None
        ),
        what="the new member in the configuration",
    )
    assert new_id in ids and old_id in ids  # the dead id stays until an operator removes it
    from .cli import run_cli

    removed = run_cli("members", "remove", old_id, "--config", str(cluster.config_path(leader)))
    assert removed.code == 0, removed.stderr
    eventually(lambda: len(cluster.status(leader)["members"]) == 3, what="the old id removed")
    assert cluster.execute(victim, "get", {"key": "k19"}).result == 19
    assert_all_equal(converged_hashes(cluster, range(3)))
    # the removed id asking to join again is refused, saying how to come back
    body = {"id": old_id, "address": cluster.raft_address(victim)}
    with http(cluster, leader, source=cluster.addresses[victim]) as client:
        answer = client.post("/v1/join", json=body)
    assert answer.status_code == 409
    assert "removed" in answer.json()["error"] and "new member" in answer.json()["error"]


def _grow_and_add(cluster: LocalCluster, megabytes: int) -> None:
    value = "x" * (900 * 1024)
    leader = cluster.wait_for_leader()
    for n in range(megabytes):
        assert cluster.execute(leader, "set", {f"big{n}": value}, timeout=60).error is None
    for n in range(60):  # enough entries behind the state to compact the log past them
        assert cluster.execute(leader, "set", {"tick": n}).error is None
    newcomer = cluster.add_node()
    cluster.start_node(newcomer)
    cluster.wait_ready(among=[newcomer], timeout=120)
    eventually(
        lambda: cluster.status(newcomer)["applied_index"] >= cluster.status(leader)["commit_index"],
        120,
        what="the newcomer to catch up",
    )
    assert cluster.execute(newcomer, "get", {"key": f"big{megabytes - 1}"}).result == value
    log = cluster.log_path(newcomer).read_text()
    assert "installed a snapshot" in log, "the newcomer caught up without a snapshot"
    # while the leader took and sent the snapshot, its heartbeats kept coming: the longest
    # silence any follower saw stays under half the minimum election timeout. A follower whose
    # own loop stood still meanwhile (a starved CPU: this test loads both cores) hears nothing
    # for longer without the leader being quiet; its warning says how long it stood, and only
    # the rest of the gap is the leader's or the network's.
    half = float(cluster.config(leader).raft.election_timeout_min_s) / 2
    for i in range(cluster.size):
        if i == leader:
            continue
        gap = cluster.status(i).get("leader_gap_max_s", 0.0)
        if gap < half:
            continue
        silences = leader_silences(cluster, i)
        assert silences, f"node {i} saw a silence of {gap}s and did not warn about it"
        quiet = max(heard - stood for heard, stood in silences)
        assert quiet < half, (
            f"node {i} heard nothing from the leader for {gap}s, {quiet:.3f}s of it while its "
            "own loop ran; the nodes logged:\n" + warnings_logged(cluster)
        )


def test_a_1_mb_snapshot_moves_to_a_new_member_in_chunks(make_emulated: Make) -> None:
    cluster = make_emulated(3, raft_overrides={"compaction_min_entries": 20})
    _grow_and_add(cluster, 1)


# The two 50 MB tests each fill two cores for seconds; beside each other (pytest-xdist) the
# heartbeat gap measured here stretches with the other's load, not with this one's snapshot.
@pytest.mark.xdist_group("fifty-mb")
def test_a_50_mb_snapshot_moves_to_a_new_member_in_chunks(make_emulated: Make) -> None:
    cluster = make_emulated(
        3,
        raft_overrides={"compaction_min_entries": 20},
        command_overrides={"timeout_s": 60.0},
    )
    _grow_and_add(cluster, 56)


def test_a_node_without_a_state_directory_refuses_to_start(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", nodes=1, base_address=unique_loopback_base())
    cluster.node_overrides[0] = {"storage": {"state_dir": ""}}
    cluster.write()
    done = subprocess.run(
        [*node_command(), str(cluster.config_path(0))],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0
    assert "storage.state_dir" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.xdist_group("fifty-mb")
def test_a_50_mb_backup_restores_on_every_node_at_one_index(make_cluster: Make) -> None:
    import hashlib
    import json

    cluster = make_cluster(3, command_overrides={"timeout_s": 60.0})
    leader = cluster.wait_for_leader()
    assert cluster.execute(leader, "set", {"before": 1}).error is None
    backup = {f"k{n}": "v" * 1000 for n in range(52_000)}  # about 53 MB of machine state
    data = json.dumps(backup, sort_keys=True).encode()
    assert len(data) > 50_000_000
    down = next(i for i in range(3) if i != leader)
    cluster.stop_node(down)  # it misses the staging: it must fetch the bytes later
    asked = next(i for i in range(3) if i not in (leader, down))
    with cluster.client(asked, timeout=120) as client:  # a follower: it goes to the leader
        outcome = client.restore_snapshot(data, timeout=120)
    assert outcome.error is None and outcome.result == {"restored_bytes": len(data)}
    index = outcome.index
    assert cluster.execute(asked, "get", {"key": "before"}).result is None
    assert cluster.execute(leader, "get", {"key": "k51999"}).result == "v" * 1000
    cluster.start_node(down)
    cluster.wait_ready(among=[down], timeout=60)
    eventually(lambda: cluster.status(down)["applied_index"] >= index, 120, what="the late node")
    digests = set()
    for i in range(3):
        with cluster.monitor(i, timeout=120) as monitor:
            _, state = monitor.snapshot(timeout=120)
        digests.add(hashlib.sha256(state).hexdigest())
    assert len(digests) == 1
