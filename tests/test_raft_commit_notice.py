"""Commit notices: the empty append that only carries a new commit index, answered by a
follower only when its log does not match (pure core, no sockets)."""

from __future__ import annotations

from tests.raft_net import Net
from tsconsensus.raft import Entry, Message, MessageType
from tsconsensus.raft.messages import COMMIT_NOTICE

MT = MessageType


def _since(net: Net, start: int) -> list[Message]:
    return net.sent[start:]


def _notice_to_2(
    net: Net, *, prev: int, log_term: int, commit: int, entries: tuple[Entry, ...] = ()
) -> list[Message]:
    """Deliver an append marked as a commit notice from leader 1 to follower 2; what 2 answers."""
    net.queue.clear()
    net.deliver_one(
        Message(
            MT.APPEND,
            to=2,
            frm=1,
            term=net.core(1).term,
            index=prev,
            log_term=log_term,
            entries=entries,
            commit=commit,
            context=COMMIT_NOTICE,
        )
    )
    net.process(2)
    return [m for m in net.queue if m.type is MT.APPEND_RESP and m.frm == 2]


def test_a_lone_command_costs_one_append_and_one_answer_per_follower_plus_a_notice() -> None:
    net = Net(3)
    net.elect(1)
    start = len(net.sent)
    index, _ = net.propose(1, b"x")
    sent = _since(net, start)
    appends = [m for m in sent if m.type is MT.APPEND and m.entries]
    notices = [m for m in sent if m.type is MT.APPEND and m.context == COMMIT_NOTICE]
    answers = [m for m in sent if m.type is MT.APPEND_RESP]
    assert sorted(m.to for m in appends) == [2, 3]
    assert sorted(m.to for m in notices) == [2, 3]
    assert all(not m.entries and m.commit == index for m in notices)
    # the notices go unanswered: only the appends with the entry are acknowledged
    assert sorted(m.frm for m in answers) == [2, 3]
    for i in (2, 3):
        assert net.core(i).commit == index


def test_a_follower_whose_log_does_not_match_a_notice_answers_it_with_a_rejection() -> None:
    net = Net(3)
    net.elect(1)
    leader = net.core(1)
    last = leader.log.last_index
    # a notice that claims an entry follower 2 does not have
    answers = _notice_to_2(net, prev=last + 5, log_term=leader.term, commit=last)
    assert len(answers) == 1 and answers[0].reject, answers
    assert net.core(2).commit <= last


def test_an_append_with_entries_is_always_answered_even_if_marked_as_a_notice() -> None:
    net = Net(3)
    net.elect(1)
    leader = net.core(1)
    index, _ = net.propose(1, b"x")
    answers = _notice_to_2(
        net,
        prev=index - 1,
        log_term=leader.log.term(index - 1) or 0,
        commit=index,
        entries=(leader.log.entry(index),),
    )
    assert len(answers) == 1 and not answers[0].reject and answers[0].index == index
