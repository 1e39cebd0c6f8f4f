"""The storage's one door to the operating system, and the few file helpers built on it.

Every system call the storage makes goes through a :class:`FileSystem` instance that is passed
in, so a test can subclass it to inject ``EIO`` on fsync or ``ENOSPC`` on a write. The helpers
here translate ``OSError`` into the storage's errors at the one place where the meaning of the
failing call is known:

- no space (``ENOSPC``, ``EDQUOT``) while writing or allocating: :class:`DiskFullError`; the
  caller undoes what it started, so the operation can be retried once space returns;
- any failure of ``fsync``/``fdatasync``: :class:`StorageFailedError`, never retried (the
  kernel may have dropped the dirty pages it could not write, and a later fsync would succeed
  without them);
- any other write failure: :class:`StorageFailedError` as well (the disk itself is failing).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

from ..errors import DiskFullError, StorageFailedError

Buffer = bytes | bytearray | memoryview

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class FileSystem:
    """Thin wrappers over the ``os`` calls the storage makes; each raises ``OSError`` exactly as
    the call does. Stateless, so any thread may use one instance. Override methods in a subclass
    to inject faults."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags | os.O_CLOEXEC, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pwrite(self, fd: int, data: Buffer, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fallocate(self, fd: int, offset: int, length: int) -> None:
        os.posix_fallocate(fd, offset, length)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def fstat_size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o700)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def disk_bytes(self, path: str) -> int:
        """Bytes the file occupies on disk (allocated blocks, not its apparent size)."""
        return os.stat(path).st_blocks * 512

    def flock(self, fd: int, operation: int) -> None:
        fcntl.flock(fd, operation)

    def map_readonly(self, fd: int, length: int) -> mmap.mmap:
        return mmap.mmap(fd, length, prot=mmap.PROT_READ)


# -- error translation ----------------------------------------------------------------------


class writing:
    """Context manager: translate a failed write, allocation, rename or truncation of
    ``path`` (a class, not a generator: it wraps every WAL write)."""

    __slots__ = ("path", "what")

    def __init__(self, what: str, path: str) -> None:
        self.what, self.path = what, path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if not isinstance(exc, OSError):
            return
        what, path = self.what, self.path
        if exc.errno in NO_SPACE:
            raise DiskFullError(
                f"{what} {path}: no space left on the device ({exc.strerror}); nothing was "
                "kept from this write and it can be retried once space is freed",
                path,
            ) from exc
        raise StorageFailedError(
            f"{what} {path} failed: {exc.strerror} (errno {exc.errno}); the disk is failing, "
            "the process must stop",
            path,
        ) from exc


class syncing:
    """Context manager: translate a failed fsync/fdatasync of ``path``: always fatal, never
    retried."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, OSError):
            raise StorageFailedError(
                f"fsync of {self.path} failed: {exc.strerror} (errno {exc.errno}); the kernel "
                "may have dropped the unwritten data, so it is not retried: the process must "
                "stop; check the disk (kernel log, SMART) before starting the node on it again",
                self.path,
            ) from exc


# -- helpers -------------------------------------------------------------------------------


def write_all(fs: FileSystem, fd: int, data: Buffer, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (raw ``OSError`` on failure; callers translate)."""
    done = fs.pwrite(fd, data, offset)
    if done == len(data):
        return
    view = memoryview(data).cast("B")
    while done < len(view):
        n = fs.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            # a regular file only writes short when it cannot grow
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += n


def fsync_dir(fs: FileSystem, path: str) -> None:
    """Make the directory's entries (created, renamed, removed files) durable."""
    with syncing(path):
        fd = fs.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fs.fsync(fd)
        finally:
            fs.close(fd)


def remove_quietly(fs: FileSystem, path: str) -> None:
    """Remove a file that holds nothing needed (a temporary file after a failure)."""
    try:
        fs.unlink(path)
    except OSError:
        pass


def atomic_write(fs: FileSystem, path: str, data: Buffer, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file.

    Written to ``path + ".tmp"``, fsynced, renamed, and the directory fsynced: when this
    returns (with ``sync``) the new content is durable. Raises :class:`DiskFullError` (the old
    file is untouched, the temporary one removed) or :class:`StorageFailedError`."""
    tmp = path + ".tmp"
    with writing("writing", tmp):
        fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            with writing("writing", tmp):
                write_all(fs, fd, data, 0)
            if sync:
                with syncing(tmp):
                    fs.fsync(fd)
        finally:
            fs.close(fd)
    except DiskFullError:
        remove_quietly(fs, tmp)
        raise
    with writing("renaming", tmp):
        fs.rename(tmp, path)
    if sync:
        fsync_dir(fs, os.path.dirname(path) or ".")
