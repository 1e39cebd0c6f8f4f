"""Node processes that a test starts itself (not through LocalCluster): with an environment or a
command prefix of its own (strace), its output in a file, its exit code at hand. Every one is
stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tsconsensus.testing import LocalCluster
from tsconsensus.testing.cluster import node_command

from .helpers import eventually


class NodeProcess:
    """Node ``i`` of ``cluster`` (whose files :meth:`LocalCluster.write` wrote), run as
    ``prefix + tsc node start --config FILE`` with ``env`` added to this process's
    environment. With a prefix (a tracer), the node is the prefix's child: :attr:`node_pid`
    finds it, and :meth:`stop` signals the node, never the tracer first."""

    def __init__(
        self,
        cluster: LocalCluster,
        i: int,
        *,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        output: Path | None = None,
    ) -> None:
        self.cluster, self.i = cluster, i
        self.output = output or cluster.directory / f"node{i + 1}.out"
        command = [*prefix, *node_command(), str(cluster.config_path(i))]
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self._traced = bool(prefix)
        self._node: int | None = None if prefix else self.proc.pid

    @property
    def node_pid(self) -> int:
        """The node's own PID (with a prefix: the tracer's child, once it has started)."""
        if self._node is None:
            self._node = eventually(self._child, 10, what="the traced node's pid")
        return self._node

    def _child(self) -> int | None:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        children = path.read_text().split()
        return int(children[0]) if children else None

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> int:
        """The exit code, once the process ends within ``timeout`` (AssertionError if not)."""
        return eventually(
            lambda: (self.proc.poll(),) if self.proc.poll() is not None else None,
            timeout,
            what=f"node{self.i + 1} to exit",
        )[0]

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        """SIGTERM (or SIGKILL) the node by its PID; SIGKILL it (and a tracer) if it outlives
        ``timeout``. Idempotent."""
        if self.proc.poll() is not None:
            return
        node = self._node
        if node is None and self._traced:
            with contextlib.suppress(OSError, ValueError):
                node = self._child()
        sig = signal.SIGKILL if kill else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(node if node is not None else self.proc.pid, sig)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.proc.poll() is None:
            for pid in (node, self.proc.pid):
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            self.proc.wait(10)
