"""Executing a command: submit to the log, wait with a deadline, retry safely.

Every execution carries a request id (the caller's, or a fresh one), so a retry after a leader
change, a lost callback or a dropped forward can never apply a command twice: the log applier
returns the first outcome for an id it has seen.

The retry policy is one pure object (:class:`_Attempts`: deadlines, backoff, which failures are
worth another try); two thin drivers run it, one blocking (no event loop involved, so a blocking
call costs no thread hops) and one for any asyncio loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Protocol

from ._applier import check_command, encode_entry_and_hash, encode_restore_entry
from ._loop import LoopMailbox
from ._outcomes import FailReason, Refusal, SubmitCallback
from .clock import Clock
from .errors import (
    CommandTimeoutError,
    InvalidCommandError,
    NoLeaderError,
    RequestIdConflictError,
)
from .types import Command, CommandResult

log = logging.getLogger("tsconsensus.execute")

MAX_REQUEST_ID_CHARS = 256
_BACKOFF_START_S = 0.005
_BACKOFF_MAX_S = 0.1

Outcome = tuple[CommandResult | None, FailReason | Refusal | None]
Start = Callable[[SubmitCallback], None]
"""Starts one attempt; the callback gets its outcome (or why there is none)."""


class _Attempts:
    """The retry policy of one execution. Pure: time comes in as numbers."""

    def __init__(self, now: float, timeout: float, attempt_timeout: float) -> None:
        self.deadline = now + timeout
        self.timeout = timeout
        self._attempt_timeout = attempt_timeout
        self._backoff = _BACKOFF_START_S
        self.last_reason: FailReason | None = None  # the last reason worth a retry
        self.retries = 0

    def next_wait(self, now: float) -> float | None:
        """How long the next attempt may wait for its outcome; ``None`` if time is up."""
        remaining = self.deadline - now
        return None if remaining <= 0 else min(remaining, self._attempt_timeout)

    def after(self, outcome: Outcome, now: float) -> CommandResult | float:
        """The result to return, or how long to pause before the next attempt.

        Raises :class:`InvalidCommandError` for a failure that no retry can cure.
        """
        result, reason = outcome
        if result is not None:
            return result
        if isinstance(reason, Refusal):
            raise RequestIdConflictError(reason.kind, reason.message)
        if reason is FailReason.DENIED:
            raise InvalidCommandError("the leader denied the command")
        self.retries += 1
        if reason is None:  # the attempt timed out: it has waited already
            return 0.0
        self.last_reason = reason
        pause = min(self._backoff, max(0.0, self.deadline - now))
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)
        return pause


class Submitter(Protocol):
    """What the executor needs from the engine."""

    @property
    def leader(self) -> str | None: ...

    @property
    def log_time(self) -> float: ...

    def on_raft_thread(self) -> bool: ...

    def is_read_only(self, command: Command) -> bool: ...

    def submit(
        self, entry: bytes, callback: SubmitCallback, *, request_id: str, digest: str
    ) -> None: ...

    def submit_read(self, command: Command, callback: SubmitCallback) -> None: ...


class CommandExecutor:
    """Runs commands through a :class:`Submitter` (the engine)."""

    def __init__(
        self, raft: Submitter, clock: Clock, *, attempt_timeout_s: float, max_entry_bytes: int
    ) -> None:
        self._raft = raft
        self._clock = clock
        self._attempt_timeout = attempt_timeout_s
        self._max_entry = max_entry_bytes
        # Generated ids: unique per process run (random prefix) and cheap (a counter).
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count()
        # outcomes come from the apply thread in batches: one loop wake-up per batch
        self._mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopMailbox] = (
            weakref.WeakKeyDictionary()
        )

    def _check_thread(self) -> None:
        if self._raft.on_raft_thread():
            # It would wait for itself: apply() runs on this thread and the command cannot be
            # applied until it returns.
            raise InvalidCommandError(
                "execute_command was called from inside apply() (the Raft thread); "
                "a state machine must not execute commands"
            )

    def _request_id(self, request_id: str | None) -> str:
        if request_id is None:
            return f"{self._id_prefix}-{next(self._id_counter)}"
        if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID_CHARS:
            raise InvalidCommandError(
                f"request_id must be a string of 1 to {MAX_REQUEST_ID_CHARS} characters"
            )
        return request_id

    def _prepare(
        self, command: Command, request_id: str | None, timeout: float
    ) -> tuple[Start, str, _Attempts]:
        """How to start one attempt of ``command``: a read-only command asks for a
        linearizable read (no log entry); any other is encoded once, so that every retry
        carries the same request id and first-submission time."""
        rid = self._request_id(request_id)
        attempts = _Attempts(self._clock.monotonic(), timeout, self._attempt_timeout)
        if self._raft.is_read_only(command):
            check_command(command)
            return (lambda cb: self._raft.submit_read(command, cb)), rid, attempts
        entry, digest = encode_entry_and_hash(rid, command, self._raft.log_time)
        return self._submitting(entry, rid, digest), rid, attempts

    def _submitting(self, entry: bytes, rid: str, digest: str) -> Start:
        if len(entry) > self._max_entry:
            raise InvalidCommandError(
                f"command is {len(entry)} bytes encoded, over the limit of {self._max_entry}"
            )
        return lambda cb: self._raft.submit(entry, cb, request_id=rid, digest=digest)

    def execute(self, command: Command, request_id: str | None, timeout: float) -> CommandResult:
        """Commit ``command`` and return its outcome as applied on this node. Blocking.

        Raises :class:`InvalidCommandError` (nothing submitted),
        :class:`RequestIdConflictError` (the id belongs to another command, or expired),
        :class:`NoLeaderError` (no leader was reachable before ``timeout``) or
        :class:`CommandTimeoutError` (a leader was known but the outcome is unknown: it may
        still be applied; retry with the same id, which the error carries).
        """
        self._check_thread()
        start, rid, attempts = self._prepare(command, request_id, timeout)
        while True:
            wait = attempts.next_wait(self._clock.monotonic())
            if wait is None:
                raise self._deadline_error(attempts, rid)
            settled = threading.Lock()
            settled.acquire()  # released by the callback: a one-shot event, cheaper than Event
            box: list[Outcome] = []

            def callback(
                result: CommandResult | None,
                reason: FailReason | Refusal | None,
                box: list[Outcome] = box,
                settled: threading.Lock = settled,
            ) -> None:
                if not box:
                    box.append((result, reason))
                    settled.release()

            start(callback)
            outcome = box[0] if settled.acquire(timeout=wait) else (None, None)
            step = attempts.after(outcome, self._clock.monotonic())
            if isinstance(step, CommandResult):
                return step
            self._note_retry(attempts)
            if step > 0:
                self._clock.wait(step)

    async def execute_async(
        self, command: Command, request_id: str | None, timeout: float
    ) -> CommandResult:
        """:meth:`execute` for a caller on any asyncio event loop."""
        return await self._run_async(*self._prepare(command, request_id, timeout))

    async def restore_async(self, sha256: str, size: int, timeout: float) -> CommandResult:
        """Commit a restore of the staged backup ``sha256`` (an entry of its own kind, which
        no command name can produce) and return its outcome: ``{"restored_bytes": n}`` or the
        error. Raises like :meth:`execute`."""
        rid = self._request_id(None)
        entry = encode_restore_entry(rid, sha256, size)
        attempts = _Attempts(self._clock.monotonic(), timeout, self._attempt_timeout)
        return await self._run_async(self._submitting(entry, rid, ""), rid, attempts)

    async def _run_async(self, start: Start, rid: str, attempts: _Attempts) -> CommandResult:
        loop = asyncio.get_running_loop()
        mailbox = self._mailboxes.get(loop)
        if mailbox is None:
            mailbox = self._mailboxes[loop] = LoopMailbox(loop)
        while True:
            wait = attempts.next_wait(self._clock.monotonic())
            if wait is None:
                raise self._deadline_error(attempts, rid)
            future: asyncio.Future[Outcome] = loop.create_future()

            def settle(outcome: Outcome, future: asyncio.Future[Outcome] = future) -> None:
                if not future.done():
                    future.set_result(outcome)

            def callback(
                result: CommandResult | None,
                reason: FailReason | Refusal | None,
                settle: object = settle,
            ) -> None:
                try:
                    mailbox.post(settle, (result, reason))  # type: ignore[arg-type]
                except RuntimeError:  # the caller's loop is closed: nobody waits any more
                    pass

            start(callback)
            # A timer that settles the future, rather than asyncio.wait_for, which wraps the
            # wait in a task of its own on every call.
            timer = loop.call_later(wait, settle, (None, None))
            try:
                outcome = await future
            finally:
                timer.cancel()
            step = attempts.after(outcome, self._clock.monotonic())
            if isinstance(step, CommandResult):
                return step
            self._note_retry(attempts)
            if step > 0:
                await self._clock.sleep(step)

    def _note_retry(self, attempts: _Attempts) -> None:
        log.debug("retrying a command after: %s", attempts.last_reason or "attempt timeout")

    def _deadline_error(self, attempts: _Attempts, request_id: str) -> NoLeaderError:
        leader = self._raft.leader
        if leader is None:
            return NoLeaderError(
                f"no leader was reachable within {attempts.timeout:g}s "
                f"(request id {request_id}: retrying with it is safe)",
                request_id=request_id,
            )
        why = f" (last: {attempts.last_reason.value})" if attempts.last_reason else ""
        return CommandTimeoutError(
            f"the command was not confirmed within {attempts.timeout:g}s{why}; its outcome is "
            f"unknown: retry with request id {request_id}",
            leader=leader,
            request_id=request_id,
        )
