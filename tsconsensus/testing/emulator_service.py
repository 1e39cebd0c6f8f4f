"""The LocalAPI emulator as a background process (``tsc dev up --tailnet emulated``).

One process serves a fake tailscaled socket per node of a dev cluster
(``DIR/nodeN.sock``), all views of one tailnet described by ``DIR/tailnet.json``. Editing that
file (``tsc dev tag``) changes the tailnet while everything runs: the service re-reads it within
a fifth of a second, so a node can be untagged, tagged again, or taken offline, and the cluster
reacts as it would on a real tailnet.

    python -m tsconsensus.testing.emulator_service DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ..errors import TsconsensusError
from .emulator import EmulatedNode, EmulatedTailnet, LocalAPIEmulator

TAILNET_FILE = "tailnet.json"
PID_FILE = "emulator.pid"
LOG_FILE = "emulator.log"
MODULE = "tsconsensus.testing.emulator_service"


def socket_path(directory: Path, hostname: str) -> Path:
    return directory / f"{hostname}.sock"


def write_tailnet(directory: Path, nodes: list[EmulatedNode]) -> None:
    """Describe the tailnet for the service (atomically: it may be reading)."""
    data = {
        "nodes": [
            {
                "hostname": n.hostname,
                "addresses": list(n.addresses),
                "tags": list(n.tags),
                "online": n.online,
            }
            for n in nodes
        ]
    }
    tmp = directory / (TAILNET_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, directory / TAILNET_FILE)


def read_tailnet(directory: Path) -> list[EmulatedNode]:
    data: dict[str, Any] = json.loads((directory / TAILNET_FILE).read_text())
    return [
        EmulatedNode(n["hostname"], n["addresses"], n["tags"], n.get("online", True))
        for n in data["nodes"]
    ]


def serve(directory: Path, stop: threading.Event) -> None:
    """Run one emulator per node of ``DIR/tailnet.json`` until ``stop``; follow its changes."""
    tailnet = EmulatedTailnet()
    emulators: dict[str, LocalAPIEmulator] = {}
    seen_mtime = -1.0
    try:
        while not stop.is_set():
            try:
                mtime = (directory / TAILNET_FILE).stat().st_mtime
            except FileNotFoundError:
                mtime = seen_mtime
            if mtime != seen_mtime:
                seen_mtime = mtime
                for node in read_tailnet(directory):
                    current = tailnet.nodes.get(node.hostname)
                    if current is None:
                        tailnet.add(node)
                        emulators[node.hostname] = tailnet.emulator(
                            node.hostname, socket_path(directory, node.hostname)
                        ).start()
                    else:
                        tailnet.set_tags(node.hostname, node.tags)
                        tailnet.set_online(node.hostname, node.online)
            stop.wait(0.2)
    finally:
        for emulator in emulators.values():
            emulator.stop()


def _alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return MODULE.encode() in cmdline


def running_pid(directory: Path) -> int | None:
    """The PID of this directory's service, if it runs."""
    try:
        pid = int((directory / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def spawn(directory: Path, hostnames: list[str], timeout: float = 10.0) -> int:
    """Start the service in the background (unless it runs) and wait for every socket."""
    pid = running_pid(directory)
    if pid is None:
        with open(directory / LOG_FILE, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", MODULE, str(directory)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid = proc.pid
        (directory / PID_FILE).write_text(f"{pid}\n")
    deadline = time.monotonic() + timeout
    while not all(socket_path(directory, h).exists() for h in hostnames):
        if time.monotonic() > deadline:
            raise TsconsensusError(f"the tailscaled emulator did not start (see {LOG_FILE})")
        time.sleep(0.05)
    return pid


def stop_service(directory: Path, timeout: float = 10.0) -> None:
    """Stop this directory's service by its PID (SIGTERM, then SIGKILL)."""
    pid = running_pid(directory)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        (directory / PID_FILE).unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path, help="dev cluster directory with tailnet.json")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve(args.directory.resolve(), stop)


if __name__ == "__main__":
    main()
