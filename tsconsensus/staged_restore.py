"""Backups staged for a restore: the bytes travel between members over their command ports,
never through the Raft log, so a restore has no size limit but the configured body limit.

``POST /v1/snapshot/restore`` (any node; forwarded to the leader) has the leader stage the
backup on every member (``POST /v1/snapshot/stage``), then commit one small entry naming it by
its SHA-256. Every node that applies that entry restores the staged bytes, all at the same log
index; a node that missed the staging (it was down) fetches them from a member that has them
(``GET /v1/snapshot/staged?sha256=``) before it applies anything further.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .errors import ClusterError, NoLeaderError, TsconsensusError
from .types import CommandResult

if TYPE_CHECKING:
    from ._executor import CommandExecutor
    from .client import PeerClients

log = logging.getLogger("tsconsensus.restore")

KEEP = 2
"""Staged backups kept (the newest ones); older ones are deleted."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StagedBackups:
    """Staged backups by SHA-256: files in ``directory`` (fsynced), or memory if None.
    Thread-safe."""

    def __init__(self, directory: Path | None) -> None:
        self._dir = directory
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, sha256: str) -> None:
        """Keep ``data`` under ``sha256``; ValueError if it does not match."""
        if sha256_of(data) != sha256:
            raise ValueError("the backup does not match its sha256")
        with self._lock:
            if self._dir is None:
                self._memory[sha256] = data
                while len(self._memory) > KEEP:
                    self._memory.popitem(last=False)
                return
            path = self._dir / sha256
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fd = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            kept = sorted(self._dir.glob("[0-9a-f]" * 64), key=lambda p: p.stat().st_mtime)
            for old in kept[:-KEEP]:
                old.unlink(missing_ok=True)

    def get(self, sha256: str) -> bytes | None:
        with self._lock:
            if self._dir is None:
                return self._memory.get(sha256)
            path = self._dir / sha256
            try:
                data = path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None
        return data if sha256_of(data) == sha256 else None


def fetcher(
    staged: StagedBackups,
    ask_peers: Callable[[str], bytes | None],
    *,
    timeout_s: float = 120.0,
) -> Callable[[str], bytes]:
    """What the applier calls to get a staged backup: here, else from a peer (retrying until
    ``timeout_s``; the apply thread waits, so nothing after the restore is applied to the
    old state). Raises :class:`TsconsensusError` if nobody has it."""

    def fetch(sha256: str) -> bytes:
        deadline = time.monotonic() + timeout_s
        pause = 0.1
        while True:
            data = staged.get(sha256)
            if data is not None:
                return data
            data = ask_peers(sha256)
            if data is not None and sha256_of(data) == sha256:
                staged.put(data, sha256)
                return data
            if time.monotonic() >= deadline:
                raise TsconsensusError(f"no member has the staged backup {sha256[:12]}")
            log.warning("waiting for the staged backup %s from a peer", sha256[:12])
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    return fetch


async def restore_everywhere(
    node: RestoringNode, data: bytes, sha256: str, timeout: float
) -> CommandResult:
    """Restore ``data`` on every member at one log index (see the module docstring). On a
    follower: hand the whole request to the leader. On the leader: stage on every member,
    and once a majority holds it, commit the entry that restores it. Raises
    :class:`NoLeaderError`, :class:`ClusterError` (too few members could stage it), or like
    :meth:`Consensus.execute_command`."""
    loop = asyncio.get_running_loop()
    if not node.is_leader:
        leader = node.command_address_of(node.leader)
        if leader is None:
            raise NoLeaderError("no leader to restore through; try again shortly")

        def forward() -> CommandResult:
            return node.peer_clients.get(leader).restore_snapshot(
                data, sha256=sha256, timeout=timeout
            )

        return await loop.run_in_executor(None, forward)
    await loop.run_in_executor(None, node.staged.put, data, sha256)
    others = [m for m in node.members() if m != node.node_id]

    def stage(member: str) -> bool:
        address = node.command_address_of(member)
        if address is None:
            return False
        try:
            node.peer_clients.get(address).stage_backup(data, sha256, timeout=timeout)
        except TsconsensusError as exc:
            log.warning("could not stage the backup on %s: %s", member, exc)
            return False
        return True

    staged = 1 + sum(await asyncio.gather(*(loop.run_in_executor(None, stage, m) for m in others)))
    members = 1 + len(others)
    if staged <= members // 2:
        raise ClusterError(
            f"the backup could be staged on only {staged} of {members} members (a majority is "
            "needed before the restore is committed); nothing was changed"
        )
    return await node.executor.restore_async(sha256, len(data), timeout)


class RestoringNode(Protocol):
    """What :func:`restore_everywhere` needs from the node."""

    peer_clients: PeerClients
    staged: StagedBackups

    @property
    def node_id(self) -> str: ...

    @property
    def executor(self) -> CommandExecutor: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader(self) -> str | None: ...

    def members(self) -> list[str]: ...

    def command_address_of(self, node_id: str | None) -> str | None: ...
