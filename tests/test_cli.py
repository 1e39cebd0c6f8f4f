from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from tsconsensus.testing import LocalCluster
from tsconsensus_cli import exit_codes
from tsconsensus_cli.app import app

from .cli import run_cli
from .conftest import unique_loopback_base

Make = Callable[..., LocalCluster]


def test_bad_json_in_args_is_one_red_line_and_usage_code(tmp_path: Path) -> None:
    result = run_cli("exec", "--address", "127.0.0.1:1", "--name", "set", "--args", "{bad")
    assert result.code == exit_codes.USAGE
    assert result.stderr.strip().count("\n") == 0
    assert "--args is not valid JSON" in result.stderr


def test_unreachable_node_is_one_line_and_its_code() -> None:
    result = run_cli("exec", "--address", "127.0.0.1:9", "--name", "get", "--args", "{}")
    assert result.code == exit_codes.UNREACHABLE
    assert "cannot reach" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_config_is_a_config_error(tmp_path: Path) -> None:
    result = run_cli("status", "--config", str(tmp_path / "none.toml"))
    assert result.code == exit_codes.CONFIG
    assert "cannot be read" in result.stderr


def test_args_from_a_file_and_from_stdin(make_cluster: Make, tmp_path: Path) -> None:
    cluster = make_cluster(3)
    cfg = str(cluster.config_path(1))
    args_file = tmp_path / "args.json"
    args_file.write_text('{"from_file": 1}')
    assert run_cli("exec", "-c", cfg, "-n", "set", "-a", f"@{args_file}").code == 0
    assert run_cli("exec", "-c", cfg, "-n", "set", "-a", "-", input='{"from_stdin": 2}').code == 0
    got = run_cli("exec", "-c", cfg, "-n", "get", "-a", '{"key": "from_stdin"}', "--json")
    assert json.loads(got.stdout)["result"] == 2
    failed = run_cli("exec", "-c", cfg, "-n", "nope", "--json")
    assert failed.code == exit_codes.FAILED
    assert json.loads(failed.stdout)["error"].startswith("unknown command")


def _walk(command: Any, path: str = "tsc") -> list[tuple[str, Any]]:
    found = [(path, command)]
    for name, sub in (getattr(command, "commands", None) or {}).items():
        found += _walk(sub, f"{path} {name}")
    return found


def test_every_command_and_option_has_help_text() -> None:
    root = typer.main.get_command(app)
    for path, command in _walk(root):
        assert command.help or command.short_help, f"{path} has no help"
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"{path} {param.opts} has no help"
        if not getattr(command, "commands", None):
            assert "Example:" in (command.help or ""), f"{path} has no example"


def test_the_real_tsc_binary_against_a_real_cluster(tmp_path: Path) -> None:
    tsc = [sys.executable, "-m", "tsconsensus_cli"]
    directory = tmp_path / "dev"
    base = unique_loopback_base()
    env = dict(os.environ)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*tsc, *args],
            capture_output=True,
            text=True,
            timeout=90,
            env=env,
            stdin=subprocess.DEVNULL,
        )

    up = run("dev", "up", "--nodes", "3", "--dir", str(directory), "--base-address", base, "--json")
    try:
        assert up.returncode == 0, up.stderr
        nodes = json.loads(up.stdout)
        assert len(nodes) == 3 and sum(n["state"] == "leader" for n in nodes) == 1
        node2 = str(directory / "node2.toml")
        done = run("exec", "--config", node2, "--name", "set", "--args", '{"k": 1}', "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] == {"k": None}
        status = run("status", "--config", str(directory / "node3.toml"), "--json")
        assert status.returncode == 0, status.stderr
        view = json.loads(status.stdout)
        assert view["healthy"] and view["leader"] is not None
        assert len(view["nodes"]) == 3
        # each member's longest silence of a leader it followed, a float of seconds
        assert all(isinstance(n["leader_gap_max_s"], float) for n in view["nodes"]), view
        table = run("status", "--config", node2)
        assert table.returncode == 0 and "leader" in table.stdout
    finally:
        down = run("dev", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    for n in nodes:
        assert (
            not Path(f"/proc/{n['pid']}").exists()
            or "Z" in Path(f"/proc/{n['pid']}/stat").read_text().split()[2]
        )


def test_readme_documents_every_exit_code() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for code, text in exit_codes.TABLE:
        assert f"| {code} | {text} |" in readme


def test_dev_cluster_on_an_emulated_tailnet_reacts_to_tags(tmp_path: Path) -> None:
    tsc = [sys.executable, "-m", "tsconsensus_cli"]
    directory = tmp_path / "dev"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*tsc, *args], capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL
        )

    base = unique_loopback_base()
    node3_address = str(ipaddress.ip_address(base) + 2)
    up = run(
        "dev",
        "up",
        "--dir",
        str(directory),
        "--base-address",
        base,
        "--tailnet",
        "emulated",
        "--in-memory",
        "--json",
    )
    try:
        assert up.returncode == 0, up.stderr
        node1 = str(directory / "node1.toml")

        def node3_connected() -> bool | None:
            view = json.loads(run("status", "--config", node1, "--json").stdout)
            node3 = next(n for n in view["nodes"] if n["address"] == node3_address)
            return node3.get("connected") if view["leader"] != node3["id"] else True

        assert run("dev", "tag", "node3", "--dir", str(directory)).returncode == 0  # untag
        deadline = time.monotonic() + 20
        # None: no single leader right now (node3 may have led and be stepping down)
        while (connected := node3_connected()) is not False and time.monotonic() < deadline:
            time.sleep(0.3)
        assert connected is False, "the untagged node is still connected"
        refused = run("exec", "--config", str(directory / "node3.toml"), "--name", "keys")
        assert refused.returncode == exit_codes.NOT_AUTHORIZED
        assert run("dev", "tag", "node3", "tag:dev", "--dir", str(directory)).returncode == 0
        deadline = time.monotonic() + 20
        while (connected := node3_connected()) is not True and time.monotonic() < deadline:
            time.sleep(0.3)
        assert connected is True
    finally:
        down = run("dev", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert not (directory / "emulator.pid").exists()


def _one_red_line(result: Any) -> None:
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0


def test_hostile_args_are_one_line_and_the_usage_code(tmp_path: Path) -> None:
    target = ["exec", "--address", "127.0.0.1:9", "--name", "set"]
    not_utf8 = tmp_path / "args.json"
    not_utf8.write_bytes(b'{"k": "\xff\xfe"}')
    cases = [
        (["--args", "[" * 5000 + "]" * 5000], "nested too deeply"),
        (["--args", "[" * 101 + "]" * 101], "nested too deeply"),
        (["--args", f"@{not_utf8}"], "not UTF-8"),
        (["--args", f"@{tmp_path / 'absent.json'}"], "cannot read"),
        (["--args", "{bad"], "not valid JSON"),
    ]
    for extra, text in cases:
        result = run_cli(*target, *extra)
        assert result.code == exit_codes.USAGE, (extra[1][:20], result.stderr)
        assert text in result.stderr
        _one_red_line(result)
    piped = run_cli(*target, "--args", "-", input=b"\xff\xfe{}")
    assert piped.code == exit_codes.USAGE and "standard input is not UTF-8" in piped.stderr
    for bad in ("127.0.0.1", "127.0.0.1:99999", "host:abc", "fd7a::1:6271"):
        result = run_cli("exec", "--address", bad, "--name", "get", "--args", "{}")
        assert result.code == exit_codes.USAGE and "invalid node address" in result.stderr
        _one_red_line(result)


def test_config_files_that_cannot_be_used_are_one_line_and_the_config_code(
    tmp_path: Path, monkeypatch: Any
) -> None:
    not_utf8 = tmp_path / "latin1.toml"
    not_utf8.write_bytes(b"[cluster]\ntag = 'tag:caf\xe9'\n")
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    cases = [
        (not_utf8, "is not UTF-8"),
        (deep, "nested too deeply"),
        (tmp_path, "cannot be read: Is a directory"),
        (tmp_path / "absent.toml", "cannot be read"),
    ]
    for path, text in cases:
        for command in (["status"], ["exec", "--name", "get"], ["node", "start"]):
            result = run_cli(*command, "--config", str(path))
            assert result.code == exit_codes.CONFIG, (command, path.name, result.stderr)
            assert text in result.stderr
            _one_red_line(result)
    # a file this user may not read (root reads anything, so the refusal is simulated)
    unreadable = tmp_path / "secret.toml"
    unreadable.write_text("[ports]\n")
    real_read_text = Path.read_text

    def refuse(self: Path, *args: Any, **kwargs: Any) -> str:
        if self == unreadable:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refuse)
    result = run_cli("status", "--config", str(unreadable))
    assert result.code == exit_codes.CONFIG and "Permission denied" in result.stderr
    _one_red_line(result)


def test_a_snapshot_file_with_a_hostile_header_is_one_line(tmp_path: Path) -> None:
    hostile = tmp_path / "deep.tscsnap"
    hostile.write_bytes(b"TSCSNAPSHOT 1\n" + b"[" * 5000 + b"]" * 5000 + b"\n")
    result = run_cli("snapshot", "inspect", str(hostile))
    assert result.code == exit_codes.FAILED and "damaged header" in result.stderr
    _one_red_line(result)
