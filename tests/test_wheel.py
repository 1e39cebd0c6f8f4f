"""The package as a user gets it: an sdist and a wheel built from the repository (``python -m
build``, the wheel made from the sdist), the wheel installed into a fresh virtualenv, and the
installed ``tsc`` running a dev cluster. Nothing of the repository is on that venv's path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from tsconsensus.testing import LocalCluster

from .conftest import unique_loopback_base

ROOT = Path(__file__).resolve().parent.parent


def _run(*argv: str | Path, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _copy_sources(to: Path) -> Path:
    """The repository's files (tracked, or new and not ignored), so building leaves no
    egg-info or build/ behind in the working tree."""
    listed = _run("git", "ls-files", "-co", "--exclude-standard", "-z", cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)
    return to


def test_a_built_wheel_installs_in_a_fresh_venv_and_runs_a_dev_cluster(tmp_path: Path) -> None:
    source = _copy_sources(tmp_path / "src")
    dist = tmp_path / "dist"
    built = _run(sys.executable, "-m", "build", "--outdir", dist, source, cwd=tmp_path, timeout=120)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (sdist,) = dist.glob("tsconsensus-*.tar.gz")
    (wheel,) = dist.glob("tsconsensus-*-py3-none-any.whl")

    with tarfile.open(sdist) as tar:
        carried = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"README.md", "config.example.toml", "commands/app.py", "tsconsensus/py.typed"} <= (
        carried
    )
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = whl.read(entry_points).decode()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"tsconsensus", "tsconsensus_cli"}
    assert "tsconsensus_cli/app.py" in names and "tsconsensus/__main__.py" in names
    assert "tsc = tsconsensus_cli.app:main" in scripts

    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python, tsc = venv / "bin" / "python", venv / "bin" / "tsc"
    installed = _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
        "--disable-pip-version-check", wheel, cwd=tmp_path, timeout=180,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]

    work = tmp_path / "elsewhere"  # not the repository: nothing importable from the cwd
    work.mkdir()
    probe = _run(
        python,
        "-c",
        "import importlib.util, tsconsensus, tsconsensus_cli;"
        "print(importlib.util.find_spec('commands'), tsconsensus.__file__)",
        cwd=work,
    )
    assert probe.returncode == 0, probe.stderr
    spec, library = probe.stdout.split()
    assert spec == "None" and Path(library).is_relative_to(venv)

    shown = _run(tsc, "--help", cwd=work)
    assert shown.returncode == 0, shown.stderr
    assert all(name in shown.stdout for name in ("exec", "status", "doctor", "dev"))
    assert _run(python, "-m", "tsconsensus", "--help", cwd=work).returncode == 0

    directory = work / "dev"
    base = unique_loopback_base()
    up = _run(tsc, "dev", "up", "--dir", directory, "--base-address", base, "--json", cwd=work)
    try:
        assert up.returncode == 0, up.stderr
        nodes = json.loads(up.stdout)
        assert len(nodes) == 3 and sum(n["state"] == "leader" for n in nodes) == 1
        for node in nodes:  # each node runs the installed library, by its own entry point
            argv = Path(f"/proc/{node['pid']}/cmdline").read_bytes().split(b"\0")
            assert argv[0] == str(python).encode() and argv[1:3] == [b"-m", b"tsconsensus"]
        done = _run(
            tsc, "exec", "--config", directory / "node2.toml",
            "--name", "set", "--args", '{"k": 1}', "--json", cwd=work,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] == {"k": None}
        down = _run(tsc, "dev", "down", "--dir", directory, cwd=work)
        assert down.returncode == 0 and "stopped 3 node(s)" in down.stdout, down.stderr
    finally:
        if (directory / "cluster.json").exists():
            LocalCluster.open(directory).stop()  # by PID, whatever happened above
    for node in nodes:
        assert (
            not Path(f"/proc/{node['pid']}/cmdline").exists()
            or not Path(f"/proc/{node['pid']}/cmdline").read_bytes()
        )
