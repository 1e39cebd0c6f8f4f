"""The node's local admin socket: ``STATE_DIR/admin.sock``, a unix socket of mode 0600.

It serves the command port's and the monitor port's endpoints together, for ``tsc`` on the
node's own host. In userspace-networking mode this is the only local way in: a local process
connecting to 127.0.0.1 is not a tailnet peer (``whois`` does not know it) and is denied on
the tailnet ports. In TUN mode ``tsc`` may use either.

Who may connect is decided by the file system: the socket is created with mode 0600 inside the
state directory, so only the node's own user (and root) can open it. A connection on it counts
as the node itself (routes that only the node may use, such as ``POST /v1/node/stop``, accept
it). The socket is created before it listens, so it is never reachable with a wider mode.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from ._http import HttpServer
from .errors import ConfigError

log = logging.getLogger("tsconsensus.http")

ADMIN_SOCKET = "admin.sock"
MAX_UNIX_PATH = 107
"""Bytes a unix socket path may hold on Linux (``sun_path`` is 108 with the final NUL)."""


def admin_socket_path(state_dir: str | Path) -> Path:
    """Where a node with this state directory serves its admin socket."""
    return Path(state_dir) / ADMIN_SOCKET


def admin_socket_for(state_dir: str, *, required: bool) -> Path | None:
    """The admin socket a node with ``state_dir`` serves, or None: none for a node in memory,
    and none (with a warning) when the path is too long for a unix socket and the node does
    not need one. ``required`` (userspace mode, where it is the only local way in): a path
    that is too long raises :class:`ConfigError` naming ``storage.state_dir``."""
    if not state_dir or state_dir == ":memory:":
        return None
    path = admin_socket_path(state_dir)
    if len(os.fsencode(path.absolute())) <= MAX_UNIX_PATH:
        return path
    if required:
        raise ConfigError(
            "storage.state_dir",
            state_dir,
            f"is too long for the admin socket {ADMIN_SOCKET} that userspace mode needs (a unix "
            f"socket path holds at most {MAX_UNIX_PATH} bytes): use a shorter directory",
        )
    log.warning("no admin socket: %s is longer than a unix socket path may be", path)
    return None


class AdminSocketServer(HttpServer):
    """An :class:`HttpServer` on a unix socket; every connection is the node itself
    (``self_address``). Runs on the loop that calls :meth:`start`; :meth:`start` raises
    :class:`OSError` if the socket cannot be made."""

    def __init__(self, path: Path, *, self_address: str, **kwargs: Any) -> None:
        async def allow(ip: str, port: int) -> bool:
            return True  # the file mode (0600) decided already

        super().__init__(name="admin", host=self_address, port=1, authorize=allow, **kwargs)
        self.path = path
        self._self_address = self_address

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a node that died; the state dir lock is ours
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            os.chmod(self.path, 0o600)  # before listen(): never connectable with a wider mode
            listener.listen(64)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._start_accepting(listener)
        log.info("admin socket listening on %s", self.path)

    async def stop(self) -> None:
        await super().stop()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _peer_of(self, addr: Any) -> tuple[str, int]:
        return self._self_address, 0
