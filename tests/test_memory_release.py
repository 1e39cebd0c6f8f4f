"""Freed heap memory goes back to the OS after a large peak (glibc's malloc_trim)."""

from __future__ import annotations

import ctypes.util

import pytest

from tsconsensus._memory import release_free_memory


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


@pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="no C library to ask")
def test_a_freed_peak_of_medium_blocks_is_given_back() -> None:
    # medium blocks (heap, not mmap) with small survivors between them: freeing the blocks
    # leaves holes that the heap cannot shrink past on its own
    blocks: list[bytes] = []
    survivors: list[bytes] = []
    for i in range(3000):
        blocks.append(bytes([i % 251]) * 60_000)
        survivors.append(bytes([i % 7]) * 700)
    blocks.clear()
    before = _rss_anon_kib()
    assert release_free_memory()
    after = _rss_anon_kib()
    assert before - after > 50_000, (before, after)  # most of the 180 MB peak is returned
    assert len(survivors) == 3000
