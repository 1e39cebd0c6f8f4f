"""LeaderSilence: the longest silence of a followed leader, and the warning that says whether
this node's own loop was late meanwhile (pure unit: times are passed in)."""

from __future__ import annotations

import logging

import pytest

from tsconsensus.raft.leader_silence import LeaderSilence

LEADER, OTHER = 0x1, 0x2


def test_only_a_followed_leader_counts_towards_the_longest_silence() -> None:
    s = LeaderSilence(warn_after_s=0.3)
    s.heard_from(OTHER, 0.0, leader=False)
    s.heard_from(OTHER, 5.0, leader=False)  # a peer's long silence is not a leader's
    s.heard_from(LEADER, 1.0, leader=True)
    s.heard_from(LEADER, 1.1, leader=True)
    s.heard_from(LEADER, 1.15, leader=True)
    assert s.longest == pytest.approx(0.1)
    assert s.heard == {OTHER: 5.0, LEADER: 1.15}


def test_a_long_silence_warns_and_names_how_late_this_nodes_loop_ran(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = LeaderSilence(warn_after_s=0.3)
    caplog.set_level(logging.WARNING, logger="tsconsensus.raft")
    s.heard_from(LEADER, 10.0, leader=True)
    s.ticked(0.02)
    s.ticked(0.45)  # the loop itself did not run for most of the gap
    s.ticked(0.01)
    s.heard_from(LEADER, 10.5, leader=True)
    assert s.longest == pytest.approx(0.5)
    [record] = caplog.records
    assert "for 0.500s" in record.getMessage()
    assert "ran up to 0.450s late" in record.getMessage()
    # the lateness is per silence: the next one starts from nothing
    s.heard_from(LEADER, 11.2, leader=True)
    assert "ran up to 0.000s late" in caplog.records[-1].getMessage()


def test_a_silence_shorter_than_the_threshold_or_the_record_does_not_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = LeaderSilence(warn_after_s=0.3)
    caplog.set_level(logging.WARNING, logger="tsconsensus.raft")
    s.heard_from(LEADER, 0.0, leader=True)
    s.heard_from(LEADER, 0.2, leader=True)
    s.heard_from(LEADER, 0.6, leader=True)  # 0.4: over, warns once
    s.heard_from(LEADER, 0.95, leader=True)  # 0.35: over the threshold, not a new record
    assert len(caplog.records) == 1
    assert s.longest == pytest.approx(0.4)
