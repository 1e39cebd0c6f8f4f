"""How tsconsensus installs: which packages the distribution holds, and the library's own node
entry point (``python -m tsconsensus``), which never goes through the CLI package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tsconsensus
from tsconsensus.testing import LocalCluster, node_command

from .conftest import unique_loopback_base

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_distribution_lists_every_package_and_maps_the_cli_under_its_own_name() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]  # type: ignore[index]
    listed = set(setuptools["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "tsconsensus").rglob("__init__.py")
    }
    assert on_disk <= listed, f"packages missing from pyproject.toml: {on_disk - listed}"
    assert setuptools["package-dir"] == {"tsconsensus_cli": "commands"}
    assert "commands" not in listed and not any(p.startswith("commands.") for p in listed)
    scripts = _pyproject()["project"]["scripts"]  # type: ignore[index]
    assert scripts == {"tsc": "tsconsensus_cli.app:main"}
    manifest = (ROOT / "MANIFEST.in").read_text().split()
    assert "config.example.toml" in manifest and "README.md" in manifest


def test_the_library_starts_nodes_with_its_own_entry_point() -> None:
    assert node_command()[1:3] == ["-m", "tsconsensus"]
    library = ROOT / "tsconsensus"
    for path in library.rglob("*.py"):
        text = path.read_text()
        assert '"-m", "commands"' not in text, path
        assert "import commands" not in text and "from commands" not in text, path


def _run_module(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tsconsensus", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_python_m_tsconsensus_help_version_and_one_line_errors(tmp_path: Path) -> None:
    shown = _run_module("--help")
    assert shown.returncode == 0
    assert "--config FILE" in shown.stdout and "Exit codes:" in shown.stdout
    version = _run_module("--version")
    assert version.returncode == 0 and tsconsensus.__version__ in version.stdout
    missing = _run_module("--config", str(tmp_path / "absent.toml"))
    assert missing.returncode == 3
    assert missing.stderr.startswith("error: config key '--config'") and "cannot be read" in (
        missing.stderr
    )
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    assert _run_module().returncode == 2  # --config is required


def test_python_m_tsconsensus_runs_a_node_until_sigterm(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", nodes=1, base_address=unique_loopback_base())
    try:
        cluster.start(wait=True, timeout=30)
        pid = cluster.pid(0)
        assert pid is not None
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [b"-m", b"tsconsensus"]
        assert cluster.execute(0, "set", {"k": 1}).result == {"k": None}
        cluster.stop_node(0)  # SIGTERM, and waits for the process to end
        log = cluster.log_path(0).read_text()
        assert "received SIGTERM" in log and "stopping" in log
        assert "Traceback" not in log
    finally:
        cluster.stop()
