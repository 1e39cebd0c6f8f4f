"""``tsc doctor`` on real dev nodes: a healthy one passes every check; a node with no secret, a
state directory it cannot write and a stopped peer gets one failing line for each, naming it
and what to fix."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tsconsensus.config import to_toml
from tsconsensus.testing import LocalCluster
from tsconsensus_cli import exit_codes

from .cli import run_cli
from .helpers import tmpfs

Make = Callable[..., LocalCluster]

EVERY_CHECK = [
    "tailnet",
    "tag",
    "node",
    "raft port",
    "command port",
    "monitor port",
    "state dir",
    "state lock",
    "secret",
]


def _doctor(config: Path | str) -> tuple[int, list[str], dict[str, dict[str, str]]]:
    """(exit code, the text lines, the checks by name from --json)."""
    text = run_cli("doctor", "--config", str(config))
    as_json = run_cli("doctor", "--config", str(config), "--json")
    assert text.code == as_json.code, (text.stderr, as_json.stderr)
    data = json.loads(as_json.stdout)
    checks = {c["check"]: c for c in data["checks"]}
    assert data["ok"] == (text.code == 0)
    return text.code, text.stdout.splitlines(), checks


def test_a_healthy_dev_node_passes_every_check(make_cluster: Make) -> None:
    cluster = make_cluster(3)
    code, lines, checks = _doctor(cluster.config_path(0))
    assert code == 0, "\n".join(lines)
    assert list(checks) == [*EVERY_CHECK, "peer node2", "peer node3"]
    assert {c["status"] for c in checks.values()} == {"ok"}
    assert len(lines) == len(checks) + 1 and lines[-1] == "every check passed"
    assert all(line.startswith("✓ ") for line in lines[:-1]), lines
    member = cluster.node_id(0)
    assert "static backend" in checks["tailnet"]["detail"]
    assert checks["node"]["detail"].startswith(f"running here as member {member}")
    for port in ("raft port", "command port", "monitor port"):
        assert checks[port]["detail"].endswith(f"is held by this node ({member})")
    assert checks["state lock"]["detail"].startswith("held by the running node (process ")
    assert f"member {member}" in checks["state dir"]["detail"]


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody may write, root included (root: a read-only tmpfs; others: mode
    0500)."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o500)
        yield path
        path.chmod(0o700)
        return
    with tmpfs(path, "ro,size=1m"):
        yield path


def test_doctor_names_a_missing_secret_an_unwritable_state_dir_and_a_stopped_peer(
    make_cluster: Make, read_only_dir: Path, tmp_path: Path
) -> None:
    cluster = make_cluster(3)
    cluster.stop_node(0)  # the node under examination is not running
    cluster.stop_node(2)  # its peer node3 is down
    broken = cluster.config(0)
    broken = dataclasses.replace(
        broken,
        cluster=dataclasses.replace(broken.cluster, secret=""),
        storage=dataclasses.replace(broken.storage, state_dir=str(read_only_dir)),
    )
    config = tmp_path / "broken.toml"
    config.write_text(to_toml(broken))

    code, lines, checks = _doctor(config)
    assert code == exit_codes.FAILED
    failing = {name for name, c in checks.items() if c["status"] == "fail"}
    assert failing == {"secret", "state dir", "peer node3"}, checks
    assert checks["secret"]["detail"] == "cluster.secret is empty: the node refuses to start"
    assert "openssl rand -hex 16" in checks["secret"]["fix"]
    assert checks["state dir"]["detail"].startswith(f"{read_only_dir} is not writable (")
    assert "chown/chmod" in checks["state dir"]["fix"]
    assert checks["peer node3"]["detail"] == (
        f"raft port {cluster.raft_address(2)}: connection refused: its node is not running"
    )
    assert "start its node" in checks["peer node3"]["fix"]
    assert checks["peer node2"]["status"] == "ok"
    assert checks["node"]["detail"].startswith("not running")
    assert checks["raft port"]["detail"].endswith("is free (no node holds it now)")
    # the text: one line per check, failing ones marked and saying what to do
    assert lines[-1] == f"3 of {len(checks)} checks failed"
    marked = [line for line in lines if line.startswith("✗ ")]
    assert [line.split()[1] for line in marked] == ["state", "secret", "peer"]
    assert all(" → " in line for line in marked)


def test_doctor_asks_tailscaled_and_sees_a_missing_tag(make_emulated: Make) -> None:
    cluster = make_emulated(1)
    code, _, checks = _doctor(cluster.config_path(0))
    assert code == 0
    assert checks["tailnet"]["detail"].startswith(f"tailscaled at {cluster.socket_path(0)}")
    assert checks["peers"]["detail"].startswith("no other node carries tag:dev")
    cluster.set_tags(0, [])
    code, _, checks = _doctor(cluster.config_path(0))
    assert code == exit_codes.FAILED
    assert checks["tag"]["status"] == "fail"
    assert checks["tag"]["fix"].startswith("tailscale up --advertise-tags=tag:dev")


def test_doctor_on_an_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    result = run_cli("doctor", "--config", str(tmp_path / "absent.toml"))
    assert result.code == exit_codes.CONFIG
    assert "cannot be read" in result.stderr and result.stderr.count("\n") == 1
