"""Giving freed memory back to the operating system after a large, short-lived peak.

Taking a snapshot builds the whole state as bytes (and the pieces it is made of) next to the
state itself; once they are freed, glibc keeps most of that memory in its heaps, where the
node's RSS still counts it (about the size of a snapshot, measured: 245 MiB against 150 MiB
live at 300,000 keys). ``malloc_trim`` returns the free pages inside the heaps too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("tsconsensus")


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim  # glibc only; musl and others lack it
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


_malloc_trim = _find_malloc_trim()


def release_free_memory() -> bool:
    """Return free heap pages to the OS, if the C library can (glibc). Blocking for a few
    milliseconds on a large heap; ctypes releases the GIL meanwhile, so call it from a worker
    thread, never the event loop. Whether anything could be done."""
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))
