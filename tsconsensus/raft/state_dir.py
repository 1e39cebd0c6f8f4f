"""The state directory's lock and the node's identity file.

``<state_dir>/LOCK`` is held with ``flock(LOCK_EX | LOCK_NB)`` for as long as a storage is
open; the holder writes its pid into it so the refusal can name it. ``flock`` belongs to the
open file, so a second storage in the same process is refused as well, and the lock vanishes
with the process however it ends.

``<state_dir>/IDENTITY`` holds the node's member id (random, non-zero, created once with the
directory) and the cluster id (0 until the node bootstraps or joins; set once)::

    magic "TSCIDENT" | version u16 | member id u64 | cluster id u64 | crc u32 (CRC-32 of the rest)

It is replaced atomically (temporary file, fsync, rename, directory fsync).
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import struct
import zlib
from dataclasses import dataclass

from ..errors import CorruptStorageError, StateDirLockedError, StorageError
from .files import FileSystem, atomic_write, writing
from .messages import MAX_ID

LOCK_NAME = "LOCK"
IDENTITY_NAME = "IDENTITY"
_IDENTITY = struct.Struct(">8sHQQ")
_MAGIC = b"TSCIDENT"


def lock_state_dir(fs: FileSystem, state_dir: str) -> int:
    """Take the directory's lock; the file descriptor to close to release it.

    Raises :class:`StateDirLockedError` naming the directory and the holder's pid."""
    path = os.path.join(state_dir, LOCK_NAME)
    with writing("opening the lock file", path):
        fd = fs.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fs.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = None
        try:
            holder = int(fs.pread(fd, 32, 0).decode("ascii").strip() or "x")
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        fs.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StorageError(f"cannot lock {path}: {exc.strerror}") from exc
        who = f"process {holder}" if holder is not None else "another process"
        raise StateDirLockedError(
            f"state directory {state_dir} is in use by {who} (it holds {path}); stop it first "
            "or give this node its own state directory",
            state_dir,
            holder,
        ) from None
    try:
        # who holds it is advice for the error above, not state: no fsync
        fs.ftruncate(fd, 0)
        fs.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    return fd


@dataclass(frozen=True)
class Identity:
    member_id: int
    cluster_id: int = 0


def new_member_id() -> int:
    """A random non-zero 64-bit member id from the system's secure source."""
    while True:
        member = secrets.randbits(64)
        if 0 < member <= MAX_ID:
            return member


def read_identity(fs: FileSystem, state_dir: str) -> Identity | None:
    """The identity stored in ``state_dir``, ``None`` if there is none yet;
    :class:`CorruptStorageError` if the file is damaged."""
    path = os.path.join(state_dir, IDENTITY_NAME)
    if not fs.exists(path):
        return None
    try:
        fd = fs.open(path, os.O_RDONLY)
        try:
            raw = fs.pread(fd, 4096, 0)
        finally:
            fs.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
    if len(raw) != _IDENTITY.size + 4:
        raise CorruptStorageError(path, 0, f"{len(raw)} bytes, expected {_IDENTITY.size + 4}")
    (crc,) = struct.unpack_from(">I", raw, _IDENTITY.size)
    if zlib.crc32(raw[: _IDENTITY.size]) != crc:
        raise CorruptStorageError(path, 0, "checksum mismatch")
    magic, version, member, cluster = _IDENTITY.unpack_from(raw, 0)
    if magic != _MAGIC or version != 1:
        raise CorruptStorageError(path, 0, f"not an identity file of version 1 ({magic!r})")
    if member == 0:
        raise CorruptStorageError(path, 0, "member id 0")
    return Identity(member, cluster)


def write_identity(fs: FileSystem, state_dir: str, identity: Identity, *, sync: bool) -> None:
    """Replace the identity file; durable on return (with ``sync``)."""
    body = _IDENTITY.pack(_MAGIC, 1, identity.member_id, identity.cluster_id)
    path = os.path.join(state_dir, IDENTITY_NAME)
    atomic_write(fs, path, body + struct.pack(">I", zlib.crc32(body)), sync=sync)
