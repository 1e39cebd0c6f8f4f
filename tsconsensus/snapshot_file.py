"""Snapshot files: a state machine's snapshot with the log index and term it covers.

Layout: the line ``TSCSNAPSHOT 1``, one line of JSON (``index``, ``term``, ``size``,
``sha256``, ``created_unix``, ``node``), then the state machine's bytes. Reading checks the
size and the checksum, so a truncated or altered file is refused rather than restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import TsconsensusError
from .safejson import loads

MAGIC = b"TSCSNAPSHOT 1\n"


class SnapshotFileError(TsconsensusError):
    """A snapshot file is unreadable, truncated, or fails its checksum."""


@dataclass(frozen=True)
class SnapshotHeader:
    index: int
    term: int
    size: int
    sha256: str
    created_unix: float
    node: str


def write_snapshot_file(
    path: str | Path, data: bytes, *, index: int, term: int, node: str
) -> SnapshotHeader:
    """Write atomically (a temporary file renamed into place); return the header written."""
    header = SnapshotHeader(
        index=index,
        term=term,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        created_unix=round(time.time(), 3),
        node=node,
    )
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(json.dumps(asdict(header)).encode() + b"\n")
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return header


def read_snapshot_file(path: str | Path) -> tuple[SnapshotHeader, bytes]:
    """Read and verify a snapshot file; raises :class:`SnapshotFileError`."""
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise SnapshotFileError(f"cannot read {p}: {exc.strerror}") from None
    if not blob.startswith(MAGIC):
        raise SnapshotFileError(f"{p} is not a tsconsensus snapshot file")
    end = blob.find(b"\n", len(MAGIC))
    try:
        header = SnapshotHeader(**loads(blob[len(MAGIC) : end], what="the header"))
    except (ValueError, TypeError) as exc:
        raise SnapshotFileError(f"{p} has a damaged header: {exc}") from None
    data = blob[end + 1 :]
    if len(data) != header.size:
        raise SnapshotFileError(f"{p} is truncated: {len(data)} of {header.size} bytes")
    if hashlib.sha256(data).hexdigest() != header.sha256:
        raise SnapshotFileError(f"{p} fails its checksum: the file was altered or damaged")
    return header, data
