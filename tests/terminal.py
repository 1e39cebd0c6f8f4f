"""A program run in a pseudo-terminal (pexpect) and drawn on an emulated screen (pyte), so a
test reads what an operator would see, row by row."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import pexpect
import pyte

TSC = [sys.executable, "-m", "tsconsensus_cli"]


class Terminal:
    """``argv`` in a ``rows`` x ``cols`` terminal (``TERM=xterm-256color``; ``COLUMNS`` and
    ``LINES`` unset, so the program must ask the terminal for its size). Stop it with
    :meth:`interrupt` or :meth:`close`."""

    def __init__(self, argv: Sequence[str], *, rows: int = 40, cols: int = 80) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        self.screen = pyte.Screen(cols, rows)
        self._stream = pyte.ByteStream(self.screen)
        self.output = bytearray()
        self.child = pexpect.spawn(
            argv[0], list(argv[1:]), dimensions=(rows, cols), env=env, timeout=10
        )

    def pump(self) -> None:
        """Draw everything the program wrote so far."""
        while True:
            try:
                data = self.child.read_nonblocking(65536, timeout=0.05)
            except (pexpect.TIMEOUT, pexpect.EOF):
                return
            self.output += data
            self._stream.feed(data)

    def lines(self) -> list[str]:
        """The screen now, one string per row, trailing blanks removed."""
        self.pump()
        return [line.rstrip() for line in self.screen.display]

    def interrupt(self, timeout: float = 15.0) -> int:
        """Ctrl-C; wait for the program to end; its exit status."""
        self.child.sendintr()
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.output += self.child.before or b""
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)

    def close(self) -> None:
        if self.child.isalive():
            self.child.close(force=True)
