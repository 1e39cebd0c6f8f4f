"""The apply thread of one node: committed entries, snapshots and reads, in log order.

The driver's loop hands it work through a queue; it calls the layer above (``apply``,
``restore``, ``take_snapshot``) on its own thread, so a slow ``apply`` never stalls heartbeats.
With ``inline`` (a state machine that declares its ``apply`` quick), the loop applies entries
itself whenever nothing is queued or running here, and answers a read whose index is applied
already the same way: one thread hand-over less per command, still in log order and never at
the same time as anything this thread runs.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from .messages import Entry, Snapshot

log = logging.getLogger("tsconsensus.raft")

Apply = Callable[[Sequence[Entry]], None]
TakeSnapshot = Callable[[], tuple[int, bytes]]
Restore = Callable[[Snapshot], None]
ReadDone = Callable[[bool], None]
_T = TypeVar("_T")


class ApplyWorker:
    """One thread, one queue. Any thread may enqueue; the callables run on the worker thread
    (or, for :meth:`apply` with ``inline``, on the caller's, when the worker is idle).

    ``on_snapshot(index, data)`` is called on the worker thread after each snapshot taken.
    Nothing wakes the loop when :attr:`applied` moves: readers poll it (the driver, once a
    tick), which spares the loop one wake-up per batch.
    """

    def __init__(
        self,
        *,
        name: str,
        applied: int,
        apply: Apply,
        take_snapshot: TakeSnapshot,
        restore: Restore,
        on_snapshot: Callable[[int, bytes], object],
        inline: bool = False,
    ) -> None:
        self._apply_fn, self._take_snapshot, self._restore = apply, take_snapshot, restore
        self._on_snapshot = on_snapshot
        self._queue: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._read_waiters: list[tuple[int, ReadDone]] = []  # under _busy
        # Held while the layer above is called (worker or inline): one caller at a time.
        self._busy = threading.Lock()
        self._count_lock = threading.Lock()
        self._pending = 0  # items queued and not yet finished
        self._inline = inline
        self._inline_thread = 0  # ident of the thread applying inline, while it does
        self.applied = applied
        """The last index handed to ``apply`` or restored (written by the worker only)."""

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Ask the thread to finish what is queued, then wait for it (blocking)."""
        self._queue.put(("stop", None))
        self._thread.join(timeout)

    def on_thread(self) -> bool:
        """Whether the caller is where ``apply`` runs now (the worker, or an inline apply)."""
        return (
            threading.current_thread() is self._thread
            or self._inline_thread == threading.get_ident()
        )

    def _put(self, kind: str, item: object) -> None:
        with self._count_lock:
            self._pending += 1
        self._queue.put((kind, item))

    def restore(self, snapshot: Snapshot) -> None:
        self._put("restore", snapshot)

    def apply(self, entries: Sequence[Entry]) -> None:
        """Apply ``entries`` after everything handed over before. With ``inline``, when the
        worker has nothing queued or running, they are applied on the calling thread (the
        loop) at once: one thread hand-over less per command."""
        if self._enter_inline():
            try:
                self._run_inline(self._apply_fn, entries)
                self.applied = entries[-1].index
                if self._read_waiters:
                    self._answer_reads()
            finally:
                self._busy.release()
            return
        self._put("apply", entries)

    def _enter_inline(self) -> bool:
        """With ``inline``, take ``_busy`` if the worker has nothing queued or running; True
        when taken (the caller runs inline, then releases it)."""
        if self._inline and self._pending == 0 and self._busy.acquire(blocking=False):
            if self._pending == 0:
                return True
            self._busy.release()
        return False

    def _run_inline(self, fn: Callable[[_T], object], arg: _T) -> None:
        """Call ``fn(arg)`` on this thread as if on the worker (``_busy`` is held)."""
        self._inline_thread = threading.get_ident()
        try:
            fn(arg)
        except Exception:  # the layer above must never raise: keep going
            log.exception("an inline call to the layer above failed")
        finally:
            self._inline_thread = 0

    def take_snapshot(self) -> None:
        self._put("snapshot", None)

    def read(self, index: int, done: ReadDone) -> None:
        """``done(True)`` once ``index`` is applied: on the worker thread, or with ``inline``,
        on the calling thread at once when ``index`` is applied already and the worker has
        nothing queued or running (``done`` then reads the machine where ``apply`` would run:
        :meth:`on_thread` is true inside it)."""
        if self.applied >= index and self._enter_inline():  # applied only grows
            try:
                self._run_inline(done, True)
            finally:
                self._busy.release()
            return
        self._put("read", (index, done))

    def call(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the worker thread between two applies."""
        self._put("call", fn)

    def _run(self) -> None:
        while True:
            kind, item = self._queue.get()
            if kind == "stop":
                return
            with self._busy:
                self._handle(kind, item)
            with self._count_lock:
                self._pending -= 1

    def _handle(self, kind: str, item: object) -> None:
        try:
            if kind == "apply":
                entries: Sequence[Entry] = item  # type: ignore[assignment]
                self._apply_fn(entries)
                self.applied = entries[-1].index
            elif kind == "restore":
                snap: Snapshot = item  # type: ignore[assignment]
                self._restore(snap)
                self.applied = snap.meta.index
            elif kind == "snapshot":
                self._on_snapshot(*self._take_snapshot())  # no local keeps the bytes alive
            elif kind == "read":
                self._read_waiters.append(item)  # type: ignore[arg-type]
            elif kind == "call":
                item()  # type: ignore[operator]
        except Exception:  # the layer above must never raise: keep the log moving
            log.exception("the apply thread failed on %s", kind)
        if self._read_waiters:
            self._answer_reads()

    def _answer_reads(self) -> None:
        applied = self.applied
        ready = [w for w in self._read_waiters if w[0] <= applied]
        if ready:
            self._read_waiters = [w for w in self._read_waiters if w[0] > applied]
            for _, done in ready:
                done(True)
