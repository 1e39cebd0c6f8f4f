"""Named scenarios of the pure Raft core, driven message by message (no clocks, no sockets)."""

from __future__ import annotations

import pytest

from tests.raft_net import Net, entry_data
from tsconsensus.errors import ProposalRefusedError
from tsconsensus.raft import (
    Entry,
    EntryKind,
    Membership,
    MembershipChange,
    MembershipOp,
    Message,
    MessageType,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tsconsensus.raft.snapshot_transfer import SnapshotReceiver, chunk_message

MT = MessageType


def test_elected_leader_commits_its_noop_and_proposals_reach_everyone() -> None:
    net = Net(3)
    net.elect(1)
    index, term = net.propose(1, b"x")
    for i in (1, 2, 3):
        assert entry_data(net.nodes[i]) == [b"x"]
        assert net.core(i).commit == index
    noop = net.core(1).log.entry(index - 1)
    assert noop.kind is EntryKind.NOOP and noop.term == term


def test_two_membership_changes_within_one_round_trip_one_at_a_time() -> None:
    net = Net(3)
    net.elect(1)
    # the old members lag: nothing they send comes back for now
    hold = {(2, 1), (3, 1)}
    net.blocked |= hold
    leader = net.core(1)
    leader.propose_membership(MembershipChange(MembershipOp.ADD_LEARNER, 10, "n10"))
    with pytest.raises(ProposalRefusedError) as refused:
        leader.propose_membership(MembershipChange(MembershipOp.ADD_LEARNER, 11, "n11"))
    assert refused.value.reason == "membership-pending"
    net.settle()
    assert leader.membership.learners == {10}
    net.heal()
    net.tick(1, times=3)  # heartbeat rounds find the lost acknowledgements
    net.settle()
    assert leader.commit >= leader._configs[-1][0]
    leader.propose_membership(MembershipChange(MembershipOp.ADD_LEARNER, 11, "n11"))
    net.settle()
    for i in (1, 2, 3):
        assert net.core(i).membership.learners == {10, 11}


def test_leader_elected_mid_change_waits_for_its_own_commit() -> None:
    # Ongaro's single-server bug: a new leader must commit an entry of its own term before it
    # proposes a change, or two changes may both be decided by different majorities.
    net = Net(3)
    net.elect(1)
    net.blocked |= {(1, 3)}
    net.core(1).propose_membership(MembershipChange(MembershipOp.ADD_LEARNER, 10, "n10"))
    net.settle(hold=lambda m: m.type is MT.APPEND_RESP)  # 2 has the change, 1 never learns
    net.crash(1)
    net.queue.clear()
    net.heal()
    new = net.core(2)
    new.step(Message(MT.TIMEOUT_NOW, to=2, frm=3, term=new.term))
    for _ in range(3):
        net.process(2)
        net.process(3)
        for m in [m for m in net.queue if m.type is MT.VOTE_RESP or m.type is MT.VOTE]:
            net.queue.remove(m)
            net.deliver_one(m)
    assert new.is_leader
    assert new.log.term(new.commit) != new.term  # its no-op has not committed yet
    with pytest.raises(ProposalRefusedError) as refused:
        new.propose_membership(MembershipChange(MembershipOp.ADD_LEARNER, 11, "n11"))
    assert refused.value.reason == "membership-pending"
    net.settle()
    assert new.log.term(new.commit) == new.term
    new.propose_membership(MembershipChange(MembershipOp.ADD_LEARNER, 11, "n11"))
    net.settle()
    assert net.core(3).membership.learners == {10, 11}


def _append(net: Net, to: int, prev: int, entries: list[Entry], commit: int = 0) -> Message:
    leader = net.core(1)
    prev_term = leader.log.term(prev) or 0
    return Message(
        MT.APPEND,
        to=to,
        frm=1,
        term=leader.term,
        index=prev,
        log_term=prev_term,
        entries=tuple(entries),
        commit=commit,
    )


def test_stale_duplicate_and_reordered_appends_remove_nothing() -> None:
    net = Net(3)
    net.elect(1)
    net.blocked |= {(1, 2)}  # node 2 gets appends only by hand below
    for k in range(5):
        net.core(1).propose(b"e%d" % k)
    net.settle()
    leader, follower = net.core(1), net.core(2)
    base = follower.log.last_index
    ents = leader.log.entries(base + 1, leader.log.last_index + 1)
    # reordered: the second half first is rejected (gap), removes nothing
    follower.step(_append(net, 2, ents[2].index - 1, ents[2:]))
    assert follower.log.last_index == base
    follower.step(_append(net, 2, base, ents))
    assert follower.log.last_index == base + 5
    # duplicate and stale (an older, shorter append arriving late): nothing is truncated
    follower.step(_append(net, 2, base, ents))
    follower.step(_append(net, 2, base, ents[:2]))
    follower.step(_append(net, 2, base + 1, ents[1:3]))
    assert follower.log.last_index == base + 5
    assert [e.data for e in follower.log.entries(base + 1, base + 6)] == [e.data for e in ents]


def test_follower_truncates_only_from_the_first_conflicting_term_and_never_committed() -> None:
    net = Net(3)
    net.elect(1)
    net.propose(1, b"committed")
    follower = net.core(2)
    commit = follower.commit
    assert commit == follower.log.last_index
    # a message from a broken leader that would replace committed entries is ignored
    bogus = Entry(commit, follower.term + 5, EntryKind.NORMAL, b"evil")
    follower.step(
        Message(
            MT.APPEND,
            to=2,
            frm=1,
            term=follower.term,
            index=commit - 1,
            log_term=follower.log.term(commit - 1) or 0,
            entries=(bogus,),
        )
    )
    assert follower.log.entry(commit).data == b"committed"
    # an uncommitted tail of another term is replaced from its first conflicting index only
    term = follower.term
    tail = [
        Entry(commit + 1, term, EntryKind.NORMAL, b"a"),
        Entry(commit + 2, term, EntryKind.NORMAL, b"b"),
    ]
    follower.step(
        Message(MT.APPEND, to=2, frm=1, term=term, index=commit, log_term=term, entries=tuple(tail))
    )
    net.queue.clear()
    newer = [
        Entry(commit + 1, term, EntryKind.NORMAL, b"a"),
        Entry(commit + 2, term + 1, EntryKind.NORMAL, b"c"),
    ]
    follower.step(
        Message(
            MT.APPEND, to=2, frm=3, term=term + 1, index=commit, log_term=term, entries=tuple(newer)
        )
    )
    assert [e.data for e in follower.log.entries(commit + 1, commit + 3)] == [b"a", b"c"]


def test_wiped_node_comes_back_new_and_cannot_elect_a_leader_lacking_an_acknowledged_entry() -> (
    None
):
    net = Net(3)
    net.elect(1)
    net.isolate(3)
    index, _ = net.propose(1, b"acknowledged")
    assert net.core(1).commit >= index  # acknowledged: durable on 1 and 2
    net.crash(1)
    net.crash(2)  # node 2 loses its disk; it returns as a new member, id 20
    net.heal()
    wiped = net.add_empty(20)
    assert wiped.core.membership.voters == frozenset()
    # 3 lacks the entry: even with the new node's vote it cannot win, since 20 is no voter
    for _ in range(100):
        net.tick(3, 20)
    assert not net.core(3).is_leader
    assert not wiped.core.is_leader and wiped.core.role is Role.FOLLOWER
    # the old leader comes back: the leader elected has the acknowledged entry
    net.restart(1)
    for _ in range(100):
        net.tick(1, 3, 20)
        if net.leaders():
            break
    (leader,) = net.leaders()
    assert net.core(leader).log.entry(index).data == b"acknowledged"


def test_prevote_keeps_a_healed_node_from_deposing_a_healthy_leader() -> None:
    net = Net(3)
    net.elect(1)
    term = net.core(1).term
    net.isolate(3)
    for _ in range(200):
        net.tick()
    assert net.core(3).term == term  # pre-votes fail: its term never moved
    net.heal()
    for _ in range(30):
        net.tick()
    assert net.leaders() == [1] and net.core(1).term == term


def test_without_prevote_the_same_heal_would_depose_the_leader() -> None:
    # the control for the test above: the scenario does disrupt a core without PreVote
    net = Net(3, pre_vote=False, check_quorum=False)
    net.elect(1)
    term = net.core(1).term
    net.isolate(3)
    for _ in range(200):
        net.tick()
    assert net.core(3).term > term
    net.heal()
    net.tick()
    assert net.core(1).term > term


def test_checkquorum_leader_cut_off_from_the_majority_steps_down() -> None:
    net = Net(3)
    net.elect(1)
    net.isolate(1)
    for _ in range(net.core(1).config.election_ticks_min * 2):
        net.tick(1)
    assert net.core(1).role is Role.FOLLOWER


def test_follower_with_a_live_leader_ignores_vote_requests_unless_after_timeout_now() -> None:
    net = Net(3)
    net.elect(1)
    follower = net.core(2)
    term = follower.term
    ask = Message(
        MT.VOTE,
        to=2,
        frm=3,
        term=term + 1,
        index=follower.log.last_index,
        log_term=follower.log.last_term,
    )
    follower.step(ask)
    assert follower.term == term and follower.vote != 3
    follower.step(
        Message(
            MT.VOTE,
            to=2,
            frm=3,
            term=term + 1,
            index=follower.log.last_index,
            log_term=follower.log.last_term,
            context=1,
        )
    )
    assert follower.term == term + 1 and follower.vote == 3


def test_followers_told_their_leader_is_down_elect_a_new_one_within_two_ticks() -> None:
    net = Net(3)
    net.elect(1)
    term = net.core(1).term
    net.crash(1)
    for member in (2, 3):
        net.core(member).report_down(1)
        assert net.core(member).leader == 0  # no lease left to defend
    net.tick(2, 3)  # in step, as two machines' ticks may be: the lower id goes first
    assert net.leaders() == [2] and net.core(2).term == term + 1  # one election, no split
    assert net.core(3).leader == 2


def test_a_down_report_alone_wins_nothing_while_the_other_follower_still_hears_the_leader() -> None:
    # a false report (or one only this follower got) costs no term while the leader is alive:
    # the other follower defends the leader's lease and the pre-vote fails
    net = Net(3)
    net.elect(1)
    term = net.core(1).term
    net.core(2).report_down(1)
    net.tick(2, times=2)
    assert net.leaders() == [1] and net.core(1).term == term
    net.tick(times=3)
    assert net.leaders() == [1] and net.core(2).leader == 1


def test_a_down_report_about_anyone_but_the_followers_leader_changes_nothing() -> None:
    net = Net(3)
    net.elect(1)
    follower = net.core(2)
    elapsed = follower._election_elapsed
    follower.report_down(3)
    assert follower.leader == 1 and follower._election_elapsed == elapsed
    net.core(1).report_down(2)  # the leader ignores it: its own heartbeats decide
    assert net.core(1).is_leader


def test_learner_never_counts_toward_a_majority_and_never_campaigns() -> None:
    net = Net(3, auto_promote=False)
    net.elect(1)
    net.core(1).propose_membership(MembershipChange(MembershipOp.ADD_LEARNER, 4, "n4"))
    net.add_empty(4)
    net.settle()
    net.tick()
    assert net.core(4).log.last_index == net.core(1).log.last_index
    # only the learner can hear the leader now
    net.blocked |= {(1, 2), (1, 3), (2, 1), (3, 1)}
    commit = net.core(1).commit
    net.core(1).propose(b"needs a voter")
    net.settle()
    assert net.core(4).log.last_index > commit  # the learner acknowledged it...
    assert net.core(1).commit == commit  # ...and it did not count
    net.core(1).read_index(77)
    net.settle()
    net.tick(1)
    assert net.nodes[1].reads == []  # a learner's heartbeat ack confirms no read either
    for _ in range(60):
        net.tick(1, 4)
    assert not net.core(1).is_leader  # CheckQuorum ignored the learner too
    assert net.core(4).role is Role.FOLLOWER and not net.core(4).is_leader


def test_learner_is_promoted_once_caught_up() -> None:
    net = Net(3)
    net.elect(1)
    for k in range(20):
        net.core(1).propose(b"%d" % k)
    net.settle()
    net.core(1).propose_membership(MembershipChange(MembershipOp.ADD_LEARNER, 4, "n4"))
    net.add_empty(4)
    for _ in range(10):
        net.tick()
    assert 4 in net.core(1).membership.voters
    assert net.core(4).membership.voters == {1, 2, 3, 4}


def test_read_index_on_a_deposed_leader_is_never_answered_with_stale_data() -> None:
    net = Net(3)
    net.elect(1)
    net.isolate(1)
    net.core(1).read_index(5)  # arrives at the old leader, cut off
    net.settle()
    net.elect(2)
    index, _ = net.propose(2, b"newer")
    for _ in range(40):
        net.tick(1)
    old = net.nodes[1]
    assert all(r.index >= index for r in old.reads if r.context == 5)
    assert old.reads == [] and old.dropped_reads == [5]
    # a read on the new leader sees the newer entry
    net.core(2).read_index(6)
    net.settle()
    net.tick(2)
    assert [(r.context, r.index >= index) for r in net.nodes[2].reads] == [(6, True)]


def test_reads_arriving_together_share_one_heartbeat_round() -> None:
    net = Net(3)
    net.elect(1)
    net.sent.clear()
    for ctx in range(1, 6):
        net.core(1).read_index(ctx)
    net.core(2).read_index(100)  # a follower's read goes through the leader too
    net.settle()
    heartbeats = [m for m in net.sent if m.type is MT.HEARTBEAT and m.context > 0]
    assert len({m.context for m in heartbeats}) <= 2
    assert sorted(r.context for r in net.nodes[1].reads) == [1, 2, 3, 4, 5]
    assert [r.context for r in net.nodes[2].reads] == [100]


def test_a_followers_reads_of_one_turn_go_to_the_leader_as_one_message() -> None:
    net = Net(3)
    net.elect(1)
    net.sent.clear()
    for ctx in (7, 8, 9):
        net.core(2).read_index(ctx)
    net.settle()
    asked = [m for m in net.sent if m.type is MT.READ_INDEX]
    answers = [m for m in net.sent if m.type is MT.READ_INDEX_RESP]
    assert len(asked) == 1 and len(answers) == 1
    assert sorted(r.context for r in net.nodes[2].reads) == [7, 8, 9]
    assert {r.index for r in net.nodes[2].reads} == {net.core(1).commit}


def test_a_followers_unanswered_reads_are_given_up_after_an_election_timeout() -> None:
    net = Net(3)
    net.elect(1)
    net.blocked.add((1, 2))  # the leader's answers (and heartbeats) never reach node 2
    net.core(2).read_index(11)
    net.settle()
    assert net.nodes[2].reads == [] and net.nodes[2].dropped_reads == []
    for _ in range(net.core(2).config.election_ticks_min - 1):
        net.core(2).tick()
    net.settle()
    assert net.nodes[2].dropped_reads == []  # not yet: the leader has a timeout to answer
    net.core(2).tick()
    net.settle()
    assert net.nodes[2].dropped_reads == [11] and net.nodes[2].reads == []


def test_a_followers_reads_in_flight_are_given_up_when_its_leader_changes() -> None:
    net = Net(3)
    net.elect(1)
    net.crash(1)  # the read reaches a dead leader
    net.core(2).read_index(21)
    net.core(3).read_index(31)
    net.settle()
    net.elect(2)  # node 2 campaigns (its read is dropped), node 3 follows the new leader
    assert net.nodes[2].dropped_reads == [21]
    assert net.nodes[3].dropped_reads == [31]
    net.core(3).read_index(32)  # asked again, of the new leader: answered
    net.settle()
    assert [r.context for r in net.nodes[3].reads] == [32]


def test_transfer_to_a_dead_member_aborts_within_an_election_timeout() -> None:
    net = Net(3)
    net.elect(1)
    net.crash(3)
    leader = net.core(1)
    leader.propose(b"lagging")  # 3 is behind: the transfer waits for it to catch up
    net.settle()
    leader.transfer_leadership(3)
    with pytest.raises(ProposalRefusedError) as refused:
        leader.propose(b"during")
    assert refused.value.reason == "transferring"
    for _ in range(leader.config.election_ticks_min):
        net.tick(1, 2)
    assert leader.is_leader and leader.transferee == 0
    leader.propose(b"after")


def test_transfer_to_a_caught_up_member_hands_over() -> None:
    net = Net(3)
    net.elect(1)
    net.propose(1, b"x")
    net.core(1).transfer_leadership(2)
    net.settle()
    assert net.leaders() == [2]


def test_removing_the_leader_hands_over_once_the_change_commits() -> None:
    net = Net(3)
    net.elect(1)
    net.core(1).propose_membership(MembershipChange(MembershipOp.REMOVE, 1))
    net.settle()
    assert not net.core(1).is_leader
    assert len(net.leaders()) == 1 and net.leaders()[0] in (2, 3)
    new = net.core(net.leaders()[0])
    assert new.membership.voters == {2, 3} and 1 in new.membership.removed
    with pytest.raises(ProposalRefusedError) as refused:
        new.propose_membership(MembershipChange(MembershipOp.ADD_LEARNER, 1, "n1"))
    assert refused.value.reason in ("invalid-membership", "membership-pending")
    net.tick()
    with pytest.raises(ProposalRefusedError, match="removed"):
        new.propose_membership(MembershipChange(MembershipOp.ADD_LEARNER, 1, "n1"))


def test_configuration_takes_effect_on_append_and_rolls_back_on_truncation() -> None:
    net = Net(5)
    net.elect(1)
    net.blocked |= {(1, 3), (1, 4), (1, 5), (2, 1)}  # only 2 gets the change, 1 never hears
    net.core(1).propose_membership(MembershipChange(MembershipOp.ADD_LEARNER, 9, "n9"))
    net.settle()
    assert 9 in net.core(1).progress  # the leader replicates to it before commit
    two = net.core(2)
    assert two.membership.learners == {9}  # in force on append, not on commit
    assert two.commit < two.log.last_index
    # a leader elected without that entry overwrites it: the configuration rolls back
    net.crash(1)
    net.heal()
    net.queue.clear()
    net.blocked |= {(3, 2), (2, 3)}
    net.elect(3)
    net.heal()
    net.tick(3)
    assert two.membership.learners == frozenset() and two.leader == 3


def test_overloaded_leader_refuses_then_accepts_once_entries_commit() -> None:
    net = Net(3, max_entry_bytes=1024, max_uncommitted_bytes=4096)
    net.elect(1)
    net.blocked |= {(2, 1), (3, 1)}
    leader = net.core(1)
    accepted = 0
    with pytest.raises(ProposalRefusedError) as refused:
        for _ in range(100):
            leader.propose(b"x" * 900)
            accepted += 1
    assert refused.value.reason == "overloaded" and 3 <= accepted <= 5
    net.heal()
    net.settle()
    net.tick(1)
    leader.propose(b"x" * 900)


def test_too_large_entry_is_refused_with_the_limit() -> None:
    net = Net(3, max_entry_bytes=1024, max_uncommitted_bytes=4096)
    net.elect(1)
    with pytest.raises(ProposalRefusedError, match="limit of 992") as refused:
        net.core(1).propose(b"x" * 1000)
    assert refused.value.reason == "too-large"


def test_not_leader_refusal_names_the_leader() -> None:
    net = Net(3)
    net.elect(1)
    with pytest.raises(ProposalRefusedError) as refused:
        net.core(2).propose(b"x")
    assert refused.value.reason == "not-leader" and refused.value.leader == 1


def test_pipelining_sends_several_batches_before_any_acknowledgement() -> None:
    net = Net(3, max_batch_bytes=200, max_inflight=4)
    net.elect(1)
    net.tick()
    leader = net.core(1)
    for k in range(20):
        leader.propose(b"%03d" % k + b"." * 60)
    out = leader.take_messages()
    appends = [m for m in out if m.type is MT.APPEND and m.to == 2]
    assert len(appends) == 4  # capped by max_inflight, each batch capped in bytes
    assert all(sum(e.size for e in m.entries) <= 200 or len(m.entries) == 1 for m in appends)
    assert appends[1].index == appends[0].entries[-1].index


def test_snapshot_reaches_a_follower_behind_the_compaction_point_in_checksummed_chunks() -> None:
    net = Net(3, snapshot_chunk_bytes=100, compaction_keep=2)
    net.elect(1)
    net.crash(3)
    for k in range(30):
        net.core(1).propose(b"entry %d" % k)
    net.settle()
    leader = net.core(1)
    state = b"".join(e.data for e in net.nodes[1].applied)  # the "state machine" bytes
    leader.snapshot_taken(Snapshot(leader.snapshot_meta(leader.applied_handed), state))
    assert leader.log.offset == leader.applied_handed - 2  # a tail of two entries is kept
    net.restart(3)
    net.sent.clear()
    net.tick(times=3)
    chunks = [m for m in net.sent if m.type is MT.SNAPSHOT and m.to == 3]
    assert len({m.offset for m in chunks}) == -(-len(state) // 100)  # every chunk, in order
    assert all(len(m.data) <= 100 for m in chunks)
    three = net.nodes[3]
    assert three.snapshot is not None and bytes(three.snapshot.data) == state
    assert three.core.commit == leader.commit and three.core.membership == leader.membership
    index, _ = net.propose(1, b"after")
    assert three.core.log.entry(index).data == b"after"


def test_snapshot_chunks_out_of_order_or_corrupt_are_refused_and_nothing_half_installed() -> None:
    meta = SnapshotMeta(50, 3, Membership(frozenset({1})), 0xC1)
    snap = Snapshot(meta, bytes(range(250)))
    chunks = [chunk_message(snap, off, 100, to=2, frm=1, term=3) for off in (0, 100, 200)]
    rx = SnapshotReceiver()
    assert rx.accept(chunks[1]) == (False, None)  # not the first chunk of a new snapshot
    assert rx.accept(chunks[0]) == (True, None)
    corrupt = chunks[1]._replace(data=b"\xff" + chunks[1].data[1:])
    assert rx.accept(corrupt) == (False, None) and rx.received == 100
    assert rx.accept(chunks[2]) == (False, None)  # a gap
    assert rx.accept(chunks[1]) == (True, None)
    ok, done = rx.accept(chunks[2])
    assert ok and done is not None and done.data == snap.data and done.meta == meta
