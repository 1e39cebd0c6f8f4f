"""The comparison benchmark (``python -m bench.compare``) at a tiny size, so it never rots.

Not a timed test: it checks that one quick run over tsconsensus and pysyncobj (etcd left out
explicitly) measures every row, prints a well-formed table, writes a real PNG and its JSON,
and leaves no process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import eventually

REPO = Path(__file__).resolve().parents[1]
RUN_DEADLINE_S = 240
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def expected_rows() -> list[str]:
    rows = []
    for what in ("writes (a) client port, 1 client", "writes (a) client port, 4 clients"):
        rows += [f"{what}: commands/s", f"{what}: p50 ms", f"{what}: p99 ms"]
        rows += [f"{what}: members' CPU µs per command"]
    for what in (
        "writes (b) in the leader's process, 1 caller",
        "writes (b) in the leader's process, 4 callers",
    ):
        rows += [f"{what}: commands/s", f"{what}: p50 ms", f"{what}: p99 ms"]
    for what in ("reads (get), 1 client", "reads (get), 4 clients"):
        rows += [f"{what}: reads/s", f"{what}: p50 ms", f"{what}: p99 ms"]
    return [
        *rows,
        "failover (1 leader kill): median ms",
        "failover (1 leader kill): max ms",
        "failover, leader frozen (1 leader freeze): median ms",
        "failover, leader frozen (1 leader freeze): max ms",
        "RSS idle, largest member: MiB",
        "RSS with 300 keys of 256 B, fresh cluster: MiB",
        "RSS after the whole run plus 300 keys of 256 B: MiB",
        "5 members: writes (a) at 4 clients: commands/s",
        "5 members / 3 members (writes at the same clients)",
    ]


def parse_table(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The Markdown table's header and its rows (label -> cells), checking its shape."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) >= 3, text
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert set(lines[1].strip("|").replace(":", "").split("|")) == {"---"}, lines[1]
    rows: dict[str, list[str]] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(header), f"{len(cells)} cells, {len(header)} columns: {line}"
        assert cells[0] not in rows, f"row {cells[0]!r} twice"
        rows[cells[0]] = cells[1:]
    return header, rows


def figure(cell: str) -> float:
    return float(cell.replace(",", ""))


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions ``text`` (this test's directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.heavy
def test_quick_run_measures_every_row_and_writes_the_chart(tmp_path: Path) -> None:
    chart, figures_file = tmp_path / "chart.png", tmp_path / "figures.json"
    argv = [
        sys.executable,
        "-m",
        "bench.compare",
        "--quick",
        "--systems",
        "tsconsensus,pysyncobj",
        "--clients",
        "1",
        "4",
        "--kills",
        "1",
        "--keys",
        "300",
        "--chart",
        str(chart),
        "--json",
        str(figures_file),
        "--dir",
        str(tmp_path),
    ]
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=RUN_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the tool stops its clusters on SIGTERM
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        raise AssertionError(f"not done within {RUN_DEADLINE_S}s:\n{err[-3000:]}") from None
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err[-4000:]}"

    header, rows = parse_table(out)
    assert header == ["measurement", "tsconsensus", "pysyncobj (non-durable)"], header
    assert list(rows) == expected_rows()
    for label, cells in rows.items():
        for column, cell in zip(header[1:], cells, strict=True):
            assert figure(cell) > 0, f"{column}, {label}: {cell!r}"
    for index in (0, 1):
        for what in ("writes (a) client port, 4 clients", "reads (get), 1 client"):
            p50, p99 = (figure(rows[f"{what}: {p} ms"][index]) for p in ("p50", "p99"))
            assert p50 <= p99, (what, p50, p99)
    assert "failover 1/1" in err and "frozen leader 1/1" in err, err
    assert "chart written to" in err, err  # progress, step by step

    data = chart.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", data[:24]
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 300, (width, height)

    for index in (0, 1):  # three members' CPU for one command: more than nothing, under 0.1 s
        cpu = figure(rows["writes (a) client port, 1 client: members' CPU µs per command"][index])
        assert cpu < 100_000, cpu

    figures = json.loads(figures_file.read_text())
    assert figures["columns"] == ["tsconsensus", "pysyncobj"]
    assert figures["problems"] == []
    in_table = figure(rows["writes (a) client port, 4 clients: commands/s"][0])
    assert abs(figures["values"]["tsconsensus"]["write_a/4/rate"] - in_table) < 1

    eventually(
        lambda: not processes_mentioning(str(tmp_path)),
        timeout=15,
        what="every process of the run gone",
    )


def test_cpu_seconds_counts_a_busy_process_and_leaves_out_a_gone_one() -> None:
    from bench.compare.procs import cpu_seconds, cpu_used

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    before = cpu_seconds([os.getpid(), gone.pid])
    assert gone.pid not in before and os.getpid() in before
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert cpu_used(before, cpu_seconds([os.getpid(), gone.pid])) >= 0.2
    # a process that was there at the start and is gone at the end counts nothing, not minus
    assert cpu_used({gone.pid: 5.0, **before}, cpu_seconds([os.getpid()])) >= 0.2


def test_the_floor_tool_measures_the_toy_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """``python -m bench.compare.floor`` at a tiny size: a well-formed table with figures for
    the toy, its state directory removed, and no process outliving the run."""
    options = ["--systems", "toy", "--rounds", "2", "--seconds", "0.3", "--dir", str(tmp_path)]
    run = subprocess.Popen(
        [sys.executable, "-m", "bench.compare.floor", *options],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    left: list[int] = []
    try:
        out, err = run.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        run.terminate()  # the tool stops its members on SIGTERM
        run.communicate(timeout=30)
        raise
    finally:
        left = processes_mentioning(str(tmp_path))
        for pid in left:  # stopped here by PID, and then the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert run.returncode == 0, err[-2000:]
    assert left == [], "processes of the run outlived it"
    rows = [line for line in out.splitlines() if line.startswith("| toy |")]
    assert len(rows) == 1, out
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert float(cells[1].replace(",", "")) > 0 and float(cells[2]) > 0, rows[0]
    assert cells[4] == "n/a"  # no etcd in this run: no ratio against it
    assert "round 2/2" in err
    assert list(tmp_path.iterdir()) == []  # its state directory is removed


def test_the_floor_tool_refuses_an_unknown_system() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.compare.floor", "--systems", "toy,zookeeper"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "unknown zookeeper" in done.stderr
