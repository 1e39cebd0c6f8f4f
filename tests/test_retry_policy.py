from __future__ import annotations

import pytest

from tsconsensus import CommandResult, InvalidCommandError
from tsconsensus._executor import _Attempts
from tsconsensus._outcomes import FailReason


def test_success_is_returned() -> None:
    attempts = _Attempts(now=0.0, timeout=5.0, attempt_timeout=2.0)
    result = CommandResult(1, None, 3)
    assert attempts.after((result, None), now=0.1) is result


def test_attempts_never_wait_past_the_deadline() -> None:
    attempts = _Attempts(now=0.0, timeout=5.0, attempt_timeout=2.0)
    assert attempts.next_wait(0.0) == 2.0
    assert attempts.next_wait(4.5) == pytest.approx(0.5)
    assert attempts.next_wait(5.0) is None


def test_backoff_doubles_up_to_a_cap_and_stops_at_the_deadline() -> None:
    attempts = _Attempts(now=0.0, timeout=10.0, attempt_timeout=2.0)
    pauses = [attempts.after((None, FailReason.NO_LEADER), now=1.0) for _ in range(8)]
    assert pauses[0] == pytest.approx(0.005)
    assert pauses[1] == pytest.approx(0.01)
    assert max(pauses) == pytest.approx(0.1)
    assert attempts.after((None, FailReason.NO_LEADER), now=9.99) == pytest.approx(0.01)
    assert attempts.last_reason is FailReason.NO_LEADER


def test_a_timed_out_attempt_retries_at_once() -> None:
    attempts = _Attempts(now=0.0, timeout=10.0, attempt_timeout=2.0)
    assert attempts.after((None, None), now=2.0) == 0.0
    assert attempts.retries == 1


def test_denied_is_not_retried() -> None:
    attempts = _Attempts(now=0.0, timeout=10.0, attempt_timeout=2.0)
    with pytest.raises(InvalidCommandError):
        attempts.after((None, FailReason.DENIED), now=0.0)
