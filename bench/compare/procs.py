"""Processes the tool starts: environment, start, stop by PID, memory (VmRSS)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C (KeyboardInterrupt), so that the ``finally`` blocks
    stop every process the run started. Main thread only."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, with the repository root on PYTHONPATH (for ``-m bench.compare.*``)."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.update(extra or {})
    return env


def spawn(
    argv: list[str], log: Path, *, env: dict[str, str] | None = None, pipes: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (a Ctrl-C on the tool reaches the tool only), its
    output appended to ``log``. With ``pipes``, stdin and stdout are pipes to talk to it
    (:func:`send`, :func:`receive`) and only stderr goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else out,
            stderr=out if pipes else subprocess.STDOUT,
            env=env if env is not None else child_env(),
            start_new_session=True,
        )


def send(proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    """One JSON line to a child started with ``pipes``."""
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message).encode() + b"\n")
    proc.stdin.flush()


def receive(proc: subprocess.Popen[bytes], timeout: float, log: Path) -> dict[str, Any]:
    """The next JSON line from a child started with ``pipes``, within ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b""
    if not line:
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        state = "exited" if proc.poll() is not None else f"silent for {timeout:g}s"
        raise RuntimeError(f"{proc.args!r} {state}; its log ends:\n{tail}")
    answer: dict[str, Any] = json.loads(line)
    return answer


def stop(proc: subprocess.Popen[bytes], *, kill: bool = False, timeout: float = 10.0) -> None:
    """Stop one of our processes by its PID: SIGTERM (or SIGKILL), then SIGKILL if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5.0)
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB, from /proc/PID/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User plus system CPU time, in seconds, that each of the processes ``pids`` (all its
    threads) has used so far, from /proc/PID/stat; a process that is gone is left out."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
        found[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (14, 15)
    return found


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two :func:`cpu_seconds` samples by the processes present in
    both (one that exited or was replaced meanwhile is left out rather than counted wrong)."""
    return sum(max(0.0, after[pid] - used) for pid, used in before.items() if pid in after)


def wait_until(probe: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """Call ``probe()`` until it is truthy; raise TimeoutError naming ``what`` after
    ``timeout`` seconds. Exceptions from the probe count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            if probe():  # type: ignore[operator]
                return
            last = None
        except Exception as exc:  # not yet: the probe could not even look
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s") from last
        time.sleep(interval)
