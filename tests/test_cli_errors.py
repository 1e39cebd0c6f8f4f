"""Errors that say what to do next: an unknown outcome prints the command to retry with its
request id (and that retry applies the command at most once); every one-line error names the
node and the address the command talked to."""

from __future__ import annotations

import shlex
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tsconsensus.testing import LocalCluster
from tsconsensus_cli import exit_codes

from .cli import CliResult, run_cli
from .helpers import eventually

Make = Callable[..., LocalCluster]


def _one_line(result: CliResult) -> str:
    line = result.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return line


def _retry_line(line: str) -> list[str]:
    """The command an unknown outcome says to run again, as arguments of ``tsc``."""
    assert "; outcome unknown: retry with: tsc exec " in line, line
    argv = shlex.split(line.split("retry with: ", 1)[1])
    assert argv[:2] == ["tsc", "exec"] and argv[-2] == "--request-id"
    return argv[1:]


def test_unknown_outcome_prints_the_retry_and_the_retry_applies_it_once(make_cluster: Make) -> None:
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    followers = [i for i in range(3) if i != leader]
    for i in followers:
        cluster.stop_node(i, kill=True)
    config = str(cluster.config_path(leader))
    args = '{"once": "it\'s set"}'  # quoting survives the round trip through the shell line
    result = run_cli("exec", "--config", config, "-n", "set", "-a", args, "--timeout", "1")
    assert result.code == exit_codes.NO_LEADER
    line = _one_line(result)
    assert line.startswith(f"error: node{leader + 1}: ")
    assert cluster.command_address(leader) in line
    retry = _retry_line(line)
    assert retry[: retry.index("--request-id")] == [
        "exec", "--config", config, "--name", "set", "--args", args
    ]  # fmt: skip
    request_id = retry[-1]
    assert f"request id {request_id}" in line  # the node's own words name the same id

    for i in followers:
        cluster.start_node(i)
    cluster.wait_ready(30)
    first = eventually(
        lambda: (r := run_cli(*retry, "--json")).code == 0 and r,
        30,
        what="the retry to be answered",
    )
    again = run_cli(*retry, "--json")
    assert again.code == 0 and again.stdout == first.stdout
    # applied at most once: a second apply of the set would have returned the first value
    assert '"result": {\n    "once": null\n  }' in first.stdout, first.stdout
    got = run_cli("exec", "--config", config, "-n", "get", "-a", '{"key": "once"}', "--json")
    assert '"result": "it\'s set"' in got.stdout


@pytest.fixture
def mute_server() -> Iterator[str]:
    """A port that reads a request and closes the connection without answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    listener.close()


def test_a_node_that_takes_the_request_and_dies_is_an_unknown_outcome(mute_server: str) -> None:
    result = run_cli("exec", "--address", mute_server, "-n", "set", "-a", '{"k": 1}')
    assert result.code == exit_codes.NO_LEADER
    line = _one_line(result)
    assert mute_server in line and "may or may not have been applied" in line
    retry = _retry_line(line)
    assert retry[:3] == ["exec", "--address", mute_server] and len(retry[-1]) == 32


def test_exec_help_explains_retries() -> None:
    shown = run_cli("exec", "--help")
    text = " ".join(shown.stdout.split())
    assert "--request-id" in text
    assert "applied at most once" in text and "dedup window" in text
    assert "raft.dedup_window_s" in text and "exit 5" in text


def test_every_error_line_names_the_node_and_the_address(
    make_cluster: Make, tmp_path: Path
) -> None:
    cluster = make_cluster(2)
    config = str(cluster.config_path(1))
    command, monitor = cluster.command_address(1), cluster.monitor_address(1)

    failed = run_cli("exec", "--config", config, "-n", "nope")
    assert failed.code == exit_codes.FAILED
    assert _one_line(failed).startswith(f"error: node2 ({command}): nope failed: ")

    cluster.stop_node(1)
    for argv, address in (
        (["exec", "-n", "get", "-a", '{"key": "k"}'], command),
        (["status"], monitor),
        (["peers"], monitor),
        (["members", "remove", "0123456789abcdef"], command),
        (["leader", "transfer"], command),
        (["snapshot", "save", str(tmp_path / "s.tscsnap")], monitor),
    ):
        result = run_cli(*argv, "--config", config)
        assert result.code == exit_codes.UNREACHABLE, (argv, result.stderr)
        line = _one_line(result)
        assert line.startswith("error: node2: ") and address in line, (argv, line)

    by_address = run_cli("exec", "--address", command, "-n", "get")
    assert f"cannot reach http://{command}" in _one_line(by_address)

    bad = tmp_path / "bad.toml"
    bad.write_text("[ports]\nraft = 70000\n")
    line = _one_line(run_cli("status", "--config", str(bad)))
    assert line.startswith(f"error: {bad}: config key 'ports.raft' = 70000")

    no_tailscaled = tmp_path / "localapi.toml"
    socket_path = tmp_path / "absent.sock"
    no_tailscaled.write_text(f'[tailnet]\nbackend = "localapi"\nsocket_path = "{socket_path}"\n')
    line = _one_line(run_cli("exec", "--config", str(no_tailscaled), "-n", "get"))
    assert line.startswith(f"error: {no_tailscaled}: cannot reach tailscaled at {socket_path}")
