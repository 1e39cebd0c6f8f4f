"""A fake ``tailscaled`` executable: the LocalAPI emulator behind tailscaled's command line.

It takes the flags a managed node passes (``--tun=userspace-networking --statedir=DIR
--socket=PATH --port=N``, and ``--socks5-server=IP:PORT`` to serve a SOCKS5 proxy), serves the
LocalAPI on
``PATH`` in userspace mode, starts in ``NeedsLogin`` and logs in on ``POST
/localapi/v0/start`` (tailscale up's request) when the auth key is one it knows. Like
tailscaled, it remembers a login in its state directory, so a restart is ``Running`` at once.
SIGTERM or SIGINT stops it (exit 0).

What it knows comes from a JSON file named by ``TSC_FAKE_TAILNET``::

    {"self": {"addresses": ["100.64.9.1"], "wire": ""},
     "nodes": [{"hostname": "peer", "addresses": ["100.64.9.2"], "tags": ["tag:db"]}],
     "auth_keys": {"tskey-good": ["tag:db"], "tskey-untagged": []}}

A key maps to the tags a node logged in with it gets (a tagged key's tags, as on a real
tailnet). An unknown key leaves the backend in ``NeedsLogin`` with a health message saying the
key was refused. :func:`write_executable` writes a ``tailscaled`` script that runs this module
with that file, for ``tailnet.tailscaled_path``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from .emulator import EmulatedNode, EmulatedTailnet, LocalAPIEmulator

ENV = "TSC_FAKE_TAILNET"
STATE_FILE = "fake-tailscaled.json"
REFUSED = "invalid key: the control server refused this auth key"


def write_executable(directory: Path, tailnet_file: Path, name: str = "tailscaled") -> Path:
    """A ``tailscaled`` script in ``directory`` that runs the fake with ``tailnet_file``."""
    path = directory / name
    path.write_text(
        "#!/bin/sh\n"
        f"{ENV}='{tailnet_file}' exec '{sys.executable}' -m tsconsensus.testing.fake_tailscaled"
        ' "$@"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class FakeTailscaled:
    """One fake tailscaled: an emulator whose self node appears when it logs in."""

    def __init__(
        self, spec: dict[str, Any], statedir: Path, socket_path: Path, socks5: str = ""
    ) -> None:
        self.statedir = statedir
        self.keys: dict[str, list[str]] = {k: list(v) for k, v in spec["auth_keys"].items()}
        me = spec.get("self") or {}
        self.tailnet = EmulatedTailnet(
            [
                EmulatedNode(
                    n["hostname"], n["addresses"], n.get("tags", ()), n.get("online", True)
                )
                for n in spec.get("nodes", ())
            ]
        )
        self.node = EmulatedNode(
            "(not logged in)", me.get("addresses") or ["100.64.9.1"], (), wire=me.get("wire", "")
        )
        self.emulator = LocalAPIEmulator(
            socket_path, self.node, tailnet=self.tailnet, socks5=socks5
        )
        self.emulator.userspace = True
        self.emulator.backend_state = "NeedsLogin"
        self.emulator.post_handlers["/localapi/v0/start"] = self._start
        saved = statedir / STATE_FILE
        if saved.exists():
            data = json.loads(saved.read_text())
            self._log_in(data["hostname"], data["tags"])

    def _log_in(self, hostname: str, tags: list[str]) -> None:
        with self.tailnet.lock:
            self.tailnet.nodes.pop(self.node.hostname, None)
            self.node.hostname = hostname
            self.node.tags = list(tags)
            self.tailnet.nodes[hostname] = self.node
        self.emulator.health = []
        self.emulator.backend_state = "Running"

    def _start(self, body: bytes) -> tuple[int, Any]:
        """``POST start``: ``{"AuthKey", "UpdatePrefs": {"Hostname", "AdvertiseTags"}}``."""
        try:
            options = json.loads(body)
            key = str(options.get("AuthKey", ""))
            prefs = options.get("UpdatePrefs") or {}
            hostname = str(prefs.get("Hostname") or "fake-node")
        except (ValueError, AttributeError):
            return 400, {"error": "bad start request"}
        tags = self.keys.get(key)
        if tags is None:
            self.emulator.backend_state = "NeedsLogin"
            self.emulator.health = [REFUSED]
            return 200, {}
        self._log_in(hostname, tags)
        (self.statedir / STATE_FILE).write_text(json.dumps({"hostname": hostname, "tags": tags}))
        return 200, {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tailscaled", description="fake tailscaled (tests)")
    parser.add_argument("--tun", default="tailscale0")
    parser.add_argument("--statedir", required=True, type=Path)
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--port", type=int, default=41641)
    parser.add_argument("--socks5-server", default="")
    args = parser.parse_args(argv)
    if args.tun != "userspace-networking":
        print("fake tailscaled: only --tun=userspace-networking is played", file=sys.stderr)
        return 1
    spec_path = os.environ.get(ENV, "")
    if not spec_path:
        print(f"fake tailscaled: {ENV} must name the tailnet file", file=sys.stderr)
        return 1
    args.statedir.mkdir(parents=True, exist_ok=True)
    spec = json.loads(Path(spec_path).read_text())
    fake = FakeTailscaled(spec, args.statedir, args.socket, args.socks5_server)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake.emulator.start()
    print(f"fake tailscaled: LocalAPI on {args.socket}, userspace networking", flush=True)
    stop.wait()
    fake.emulator.stop()
    print("fake tailscaled: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
