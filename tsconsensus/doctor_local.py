"""The checks of ``tsc doctor`` (:mod:`tsconsensus.doctor`) on the node's own machine: what
answers on its address, its ports, its state directory and the directory's lock.

Nothing here changes anything: a port is bound only to see whether it is free, the lock is
taken shared for an instant (it never stands in a node's way for longer), and one temporary
file is written in the state directory to see that it can be.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .address import NodeAddress
from .client import NodeClient
from .config import Config
from .errors import NotAuthorizedError, TsconsensusError
from .raft import MEMORY
from .raft.files import FileSystem
from .raft.state_dir import LOCK_NAME, read_identity
from .types import SetupCheck

OK, WARN, FAIL, SKIP = SetupCheck.STATUSES


@dataclass(frozen=True)
class Here:
    """The node's address, the member that answers there, and the member its state directory
    records."""

    address: str
    answering: str | None
    """The member id of the node answering on the address; ``""`` when a node answers but
    refuses this client; ``None`` when nothing answers."""
    said: str
    """What it said about itself (or why it refused)."""
    identity: str | None
    """The member id in the state directory (``None``: none yet, or not readable)."""

    @property
    def this_node(self) -> bool:
        """The node answering here is the one this config and state directory describe."""
        return bool(self.answering) and self.identity in (None, self.answering)


def look_here(
    config: Config, address: str, timeout: float, *, endpoint: str | None = None
) -> Here:
    """Ask the node's own ports, from its own address, who runs there; or, with
    ``endpoint`` (its admin socket in userspace mode), ask there. ``address`` is where the
    node listens (its ports are checked there)."""
    answering, said = _ask(config, address, timeout, endpoint)
    return Here(address, answering, said, _identity(config))


def _ask(
    config: Config, address: str, timeout: float, endpoint: str | None
) -> tuple[str | None, str]:
    serve = config.monitor.serve or endpoint is not None  # the admin socket serves both
    port = config.ports.monitor if serve else config.ports.command
    where = endpoint or str(NodeAddress(address, port))
    source = None if endpoint else address
    try:
        with NodeClient(where, timeout=timeout, source_address=source) as client:
            if not serve:
                ident: dict[str, Any] = client.request("GET", "/v1/identity")
                return str(ident["id"]), f"running here as member {ident['id']}"
            s = client.status()
    except NotAuthorizedError as exc:
        return "", f"a node answers at {where} but refuses this client: {exc}"
    except (TsconsensusError, KeyError, TypeError):
        return None, f"not running (nothing answers at {where})"
    role = f"{s['state']} in term {s['term']}"
    if s["state"] != "leader":
        role += f" (leader {s.get('leader') or 'unknown'})"
    return str(s["node_id"]), f"running here as member {s['node_id']}: {role}"


def _identity(config: Config) -> str | None:
    state_dir = config.storage.state_dir
    if not state_dir or state_dir == MEMORY:
        return None
    try:
        identity = read_identity(FileSystem(), state_dir)
    except TsconsensusError:
        return None  # the state directory's check says what is wrong with it
    return None if identity is None else f"{identity.member_id:016x}"


def node_check(config: Config, here: Here) -> SetupCheck:
    if here.answering is None or here.this_node:
        return SetupCheck("node", OK, here.said)
    if here.answering == "":
        fix = "the node must see its own address with the cluster tag (see the tag check)"
        return SetupCheck("node", FAIL, here.said, fix)
    return SetupCheck(
        "node",
        FAIL,
        f"a node answers here as member {here.answering}, but {config.storage.state_dir} "
        f"holds member {here.identity}",
        "that node runs from another state directory: stop it, or point storage.state_dir "
        "at the directory it uses",
    )


def port_check(key: str, port: int, here: Here) -> SetupCheck:
    """Is ``port`` (``ports.KEY``) free on the node's address, or held by this very node?"""
    name, where = f"{key} port", str(NodeAddress(here.address, port))
    family = socket.AF_INET6 if ":" in here.address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the node binds
            probe.bind((here.address, port))
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            fix = "is tailscale up here? (static backend: check tailnet.address)"
            return SetupCheck(name, FAIL, f"{here.address} is not an address of this machine", fix)
        if exc.errno != errno.EADDRINUSE:
            return SetupCheck(
                name, FAIL, f"cannot bind {where}: {exc.strerror}", f"check ports.{key}"
            )
        if here.this_node:
            return SetupCheck(name, OK, f"{where} is held by this node ({here.answering})")
        if here.answering == "":
            return SetupCheck(name, WARN, f"{where} is held by the node that refuses this client")
        holder = f"member {here.answering}" if here.answering else "another program"
        fix = (
            f"stop it (ss -ltnp 'sport = :{port}' shows which), or set ports.{key} to a free "
            "port on every node"
        )
        return SetupCheck(name, FAIL, f"{where} is in use by {holder}", fix)
    return SetupCheck(name, OK, f"{where} is free (no node holds it now)")


def state_dir_checks(config: Config, here: Here | None) -> list[SetupCheck]:
    """The directory (writable, identity readable) and its lock (free, or held by this node).
    ``here`` is ``None`` when nobody could be asked (the tailnet did not answer)."""
    state_dir = config.storage.state_dir
    if state_dir == MEMORY:
        return [
            SetupCheck(
                "state dir",
                WARN,
                "':memory:': this node keeps nothing on disk and comes back from a restart as "
                "a new member",
                "set storage.state_dir to a directory for a node that must survive restarts",
            )
        ]
    if not state_dir:
        fix = "set storage.state_dir to a directory only this node uses (or ':memory:')"
        return [SetupCheck("state dir", FAIL, "storage.state_dir is empty", fix)]
    return [_writable(Path(state_dir)), _lock(Path(state_dir), here)]


def _writable(path: Path) -> SetupCheck:
    fix = f"let the node's user write there (chown/chmod {path}), or mount it read-write"
    if path.exists() and not path.is_dir():
        fix = "point storage.state_dir at a directory"
        return SetupCheck("state dir", FAIL, f"{path} is not a directory", fix)
    if not path.exists():
        parent = next(p for p in path.parents if p.exists())
        if os.access(parent, os.W_OK | os.X_OK):
            return SetupCheck("state dir", OK, f"{path} does not exist yet: the node creates it")
        problem = f"{path} cannot be created: {parent} is not writable"
        return SetupCheck("state dir", FAIL, problem, fix)
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".tsc-doctor-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return SetupCheck("state dir", FAIL, f"{path} is not writable ({exc.strerror})", fix)
    try:
        identity = read_identity(FileSystem(), str(path))
    except TsconsensusError as exc:
        fix = "stop the node, wipe the directory and start it: it rejoins as a new member"
        return SetupCheck("state dir", FAIL, str(exc), fix)
    who = (
        f"member {identity.member_id:016x}"
        if identity is not None
        else "no member id yet (made at first start)"
    )
    return SetupCheck("state dir", OK, f"{path} is writable; {who}")


def _lock(path: Path, here: Here | None) -> SetupCheck:
    lock = path / LOCK_NAME
    holder = _lock_holder(lock)
    if holder is None:
        return SetupCheck("state lock", OK, f"{lock} is free: no node uses the directory now")
    pid = f"process {holder}" if holder else "a process"
    if here is not None and here.this_node:
        return SetupCheck(
            "state lock", OK, f"held by the running node ({pid}, member {here.answering})"
        )
    if here is not None and here.answering == "":
        return SetupCheck("state lock", WARN, f"held by {pid}: the node that refuses this client?")
    return SetupCheck(
        "state lock",
        FAIL,
        f"{lock} is held by {pid}, but no node answers as the member of this directory",
        f"see what it is (ps -p {holder}): a node still starting or stuck, or another one "
        "using this directory; stop it, or give this node its own state directory",
    )


def _lock_holder(lock: Path) -> int | None:
    """``None`` if nobody holds ``lock``; else the holder's pid as it wrote it (0: unknown)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: never blocks the node
        except BlockingIOError:
            with contextlib.suppress(OSError, ValueError):
                return int(os.pread(fd, 32, 0).decode("ascii").strip())
            return 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
