"""Storage layer throughput against the disk's own fdatasync rate (prints a table; not a test).

Measured in one run, on the same file system, interleaved round by round:

- raw: ``pwrite`` of one record + ``os.fdatasync`` in a loop, on a preallocated file: the
  ceiling for anything that syncs every record (and the same with N records per write, the
  ceiling for group commit);
- storage, 1 per sync: ``FileStorage.save`` of one entry per call (one frame, one fdatasync);
- storage, N per sync: ``save`` of N entries per call (group commit, as a driver does with
  everything one loop turn gathered);
- storage, no sync: N per call with ``sync=False`` (the encoding and write cost alone).

    .venv/bin/python bench/storage.py [--dir DIR] [--seconds 1] [--rounds 7] [--group 64]

Figures are medians over rounds; the machine is shared and noisy, so compare within one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tsconsensus.raft.messages import Entry
from tsconsensus.raft.storage import FileStorage


def raw_fdatasync(
    directory: Path, record: bytes, seconds: float, group: int = 1
) -> tuple[float, float]:
    """(records/s, syncs/s) of one pwrite of ``group`` records + fdatasync."""
    record = record * group
    path = directory / "raw.bin"
    size = 64 << 20
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
        n, start = 0, time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            os.pwrite(fd, record, (n * len(record)) % (size - len(record)))
            os.fdatasync(fd)
            n += 1
        rate = n / (time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return rate * group, rate


def storage_rate(
    directory: Path, record: bytes, seconds: float, group: int, *, sync: bool = True
) -> tuple[float, float]:
    """(records/s, syncs/s) of ``save`` with ``group`` entries per call."""
    state = directory / "node"
    shutil.rmtree(state, ignore_errors=True)
    with FileStorage(state, sync=sync) as s:
        index, calls, start = 1, 0, time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            s.save(None, [Entry(index + k, 1, data=record) for k in range(group)])
            index += group
            calls += 1
        elapsed = time.perf_counter() - start
    shutil.rmtree(state, ignore_errors=True)
    return (index - 1) / elapsed, (calls / elapsed if sync else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: /tmp)")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=7, help="measurements per figure")
    parser.add_argument("--record-bytes", type=int, default=256, help="bytes of entry data")
    parser.add_argument("--group", type=int, default=64, help="entries per sync, group commit")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="tsc-bench-storage-", dir=args.dir))
    record = os.urandom(args.record_bytes)
    cases: dict[str, Callable[[], tuple[float, float]]] = {
        "raw pwrite + fdatasync": lambda: raw_fdatasync(directory, record, args.seconds),
        f"raw, {args.group} per pwrite + fdatasync": lambda: raw_fdatasync(
            directory, record, args.seconds, args.group
        ),
        "storage, 1 per sync": lambda: storage_rate(directory, record, args.seconds, 1),
        f"storage, {args.group} per sync": lambda: storage_rate(
            directory, record, args.seconds, args.group
        ),
        f"storage, {args.group} per call, no sync": lambda: storage_rate(
            directory, record, args.seconds, args.group, sync=False
        ),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    try:
        for _ in range(args.rounds):
            for name, run in cases.items():
                results[name].append(run())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    medians = {
        name: (
            statistics.median(r for r, _ in runs),
            statistics.median(s for _, s in runs),
        )
        for name, runs in results.items()
    }
    raw = medians["raw pwrite + fdatasync"][0]
    rounds = f"{args.rounds} rounds of {args.seconds:g} s"
    print(f"{args.record_bytes}-byte records, {rounds}, in {directory.parent}")
    print(f"{'case':<40} {'records/s':>11} {'fdatasync/s':>12} {'records/s vs raw':>17}")
    for name, (records, syncs) in medians.items():
        sync_text = f"{syncs:12.0f}" if syncs else f"{'-':>12}"
        print(f"{name:<40} {records:11.0f} {sync_text} {records / raw:16.2f}x")


if __name__ == "__main__":
    main()
