"""LeaderSilence: the longest silence of a followed leader, and the warning that says how long
this node's own loop stood still meanwhile (pure unit: times are passed in)."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

import pytest

from tsconsensus.raft.leader_silence import LeaderSilence
from tsconsensus.testing import LocalCluster

from .helpers import eventually, leader_silences

A, B, OTHER = 0x1, 0x2, 0x3


class Warnings:
    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def __len__(self) -> int:
        return len(self._caplog.messages)

    def __getitem__(self, i: int) -> str:
        return self._caplog.messages[i]


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Warnings:
    caplog.set_level(logging.WARNING, logger="tsconsensus.raft")
    return Warnings(caplog)


def test_only_a_followed_leaders_silences_count_each_from_its_first_word() -> None:
    s = LeaderSilence(warn_after_s=0.3)
    s.heard_from(OTHER, 0.0, leader=False)
    s.heard_from(OTHER, 5.0, leader=False)  # a peer's long silence is not a leader's
    s.heard_from(A, 1.0, leader=True)
    s.heard_from(A, 1.1, leader=True)
    s.heard_from(A, 1.15, leader=True)
    assert s.longest == pytest.approx(0.1)
    s.heard_from(B, 0.5, leader=False)  # B, long before it leads
    s.heard_from(B, 9.0, leader=True)  # its first word as leader: no silence measured yet
    s.heard_from(B, 9.05, leader=True)
    assert s.longest == pytest.approx(0.1)
    assert s.heard == {OTHER: 5.0, A: 1.15, B: 9.05}


def test_a_stall_ended_by_a_message_before_the_late_tick_is_named(warnings: Warnings) -> None:
    """After a stall the loop handles the arrived bytes before the due timers: the tick
    that was due during the silence has not run when the message ends it."""
    s = LeaderSilence(warn_after_s=0.3)
    s.heard_from(A, 10.0, leader=True)
    s.heard_from(A, 10.08, leader=True)
    s.ticked(10.1, 10.1)  # on time
    s.heard_from(A, 10.6, leader=True, tick_due=10.2)  # the loop stood from 10.2 on
    assert s.longest == pytest.approx(0.52)
    assert len(warnings) == 1
    assert "for 0.520s" in warnings[0] and "stood still for up to 0.400s" in warnings[0]
    s.ticked(10.2, 10.6)  # the late tick, in the same loop turn: it adds nothing to the next
    s.heard_from(A, 11.2, leader=True, tick_due=11.3)  # quiet leader, punctual loop
    assert len(warnings) == 2
    assert "for 0.600s" in warnings[1] and "stood still for up to 0.000s" in warnings[1]


def test_late_ticks_within_a_silence_count_from_the_last_word(warnings: Warnings) -> None:
    s = LeaderSilence(warn_after_s=0.3)
    s.heard_from(A, 20.0, leader=True)
    s.heard_from(A, 20.1, leader=True)
    s.ticked(20.05, 20.4)  # due before the last word: the loop ran at 20.1, so 0.3
    s.ticked(20.5, 20.55)
    s.heard_from(A, 20.7, leader=True, tick_due=20.65)
    assert "for 0.600s" in warnings[0] and "stood still for up to 0.300s" in warnings[0]


def test_a_silence_shorter_than_the_threshold_or_the_record_does_not_warn(
    warnings: Warnings,
) -> None:
    s = LeaderSilence(warn_after_s=0.3)
    s.heard_from(A, 0.0, leader=True)
    s.heard_from(A, 0.2, leader=True)
    s.heard_from(A, 0.6, leader=True)  # 0.4: over, warns once
    s.heard_from(A, 0.95, leader=True)  # 0.35: over the threshold, not a new record
    assert len(warnings) == 1
    assert s.longest == pytest.approx(0.4)


def _freeze(cluster: LocalCluster, i: int, seconds: float) -> None:
    cluster.signal_node(i, signal.SIGSTOP)
    try:
        time.sleep(seconds)  # the fault itself: node i stands still this long
    finally:
        cluster.signal_node(i, signal.SIGCONT)


def test_real_nodes_tell_a_frozen_leader_from_a_frozen_follower(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    """SIGSTOP for longer than half the election timeout (0.3 s with the defaults): a frozen
    leader's followers blame the silence; a frozen follower, later and for longer (a warning
    comes with a new longest silence), blames its own loop."""
    cluster = make_cluster(3, raft_overrides={})
    leader = cluster.wait_for_leader()
    followers = [i for i in range(3) if i != leader]
    _freeze(cluster, leader, 0.35)  # well under the shortest election timeout, 0.6 s
    for i in followers:
        [(gap, stood)] = eventually(
            lambda i=i: leader_silences(cluster, i), 10, what=f"node {i}'s warning"
        )
        assert gap > 0.3 and stood < gap / 2, (i, gap, stood)
    _freeze(cluster, followers[0], 1.0)
    found = eventually(
        lambda: leader_silences(cluster, followers[0])[1:], 10, what="the frozen follower's warning"
    )
    gap, stood = found[0]
    assert gap >= 0.9 and 0.7 <= stood <= gap, (gap, stood)


def test_a_time_spent_leading_is_no_silence_of_the_leader_followed_again(
    warnings: Warnings,
) -> None:
    s = LeaderSilence(warn_after_s=0.3)
    s.follow(A)
    s.heard_from(A, 0.0, leader=True)
    s.heard_from(A, 0.1, leader=True)
    s.follow(None)  # this node leads for six seconds (A follows it meanwhile)
    s.heard_from(A, 3.0, leader=False)
    s.follow(A)  # A leads again: its silences count from its first word to this node
    s.heard_from(A, 6.0, leader=True)
    s.heard_from(A, 6.1, leader=True)
    assert s.longest == pytest.approx(0.1) and len(warnings) == 0
    s.follow(A)  # the same leader again (a soft state that changed elsewhere): no reset
    s.heard_from(A, 6.6, leader=True)
    assert s.longest == pytest.approx(0.5) and len(warnings) == 1


def test_a_silence_that_made_this_node_campaign_is_still_reported(warnings: Warnings) -> None:
    """The driver calls follow() only on leading or on following a leader: a spell as a
    (pre-)candidate that ends with the same leader speaking again keeps the silence whole."""
    s = LeaderSilence(warn_after_s=0.3)
    s.follow(A)
    s.heard_from(A, 0.0, leader=True)
    s.heard_from(A, 0.1, leader=True)
    # cut off from A; at 0.6 it campaigns (a pre-vote the others refuse): no follow() call
    s.heard_from(A, 1.0, leader=False)  # A's first word, before the step makes it leader
    s.follow(A)  # following A again
    s.heard_from(A, 1.05, leader=True)
    assert s.longest == pytest.approx(0.95) and len(warnings) == 1
