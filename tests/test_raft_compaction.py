"""When the core asks for a snapshot and how much log it keeps behind one: by entry count and
by bytes (pure core, no sockets)."""

from __future__ import annotations

from tests.raft_net import Net
from tsconsensus.raft import RaftCore, Ready, Snapshot


def _record_due(core: RaftCore) -> list[int]:
    """The handed-out index at each Ready that asked for a snapshot."""
    asked: list[int] = []
    ready = core.ready

    def recording() -> Ready:
        rd = ready()
        if rd.snapshot_due:
            asked.append(core.applied_handed)
        return rd

    core.ready = recording  # type: ignore[method-assign]
    return asked


def _snapshot_now(net: Net, member: int, state: bytes) -> None:
    core = net.core(member)
    core.snapshot_taken(Snapshot(core.snapshot_meta(core.applied_handed), state))


def test_large_entries_ask_for_a_snapshot_long_before_the_entry_count() -> None:
    net = Net(3, snapshot_entries=10_000, snapshot_bytes=10_000)
    net.elect(1)
    asked = _record_due(net.core(1))
    for _ in range(3):
        net.propose(1, b"x" * 3000)
    assert asked == []  # 9,000 bytes and some headers: not yet
    net.propose(1, b"x" * 3000)
    assert len(asked) == 1  # past 10,000 bytes: a snapshot is asked for, once
    net.propose(1, b"x" * 3000)
    assert len(asked) == 1  # not again until the first one is taken


def test_after_a_large_snapshot_the_log_may_grow_to_its_size_before_the_next() -> None:
    net = Net(3, snapshot_entries=10_000, snapshot_bytes=10_000)
    net.elect(1)
    asked = _record_due(net.core(1))
    for _ in range(4):
        net.propose(1, b"x" * 3000)
    assert len(asked) == 1
    _snapshot_now(net, 1, b"s" * 30_000)  # a state three times the byte threshold
    for _ in range(8):
        net.propose(1, b"x" * 3000)
    assert len(asked) == 1  # 24,000 bytes of log: less than the last snapshot
    for _ in range(3):
        net.propose(1, b"x" * 3000)
    assert len(asked) == 2


def test_the_tail_kept_behind_a_snapshot_is_bounded_by_bytes_and_by_count() -> None:
    net = Net(3, snapshot_entries=10_000, compaction_keep=1000, compaction_keep_bytes=7000)
    net.elect(1)
    for _ in range(10):
        net.propose(1, b"x" * 3000)
    leader = net.core(1)
    _snapshot_now(net, 1, b"state")
    assert leader.log.offset == leader.applied_handed - 2  # two 3,000-byte entries fit

    net = Net(3, snapshot_entries=10_000, compaction_keep=3, compaction_keep_bytes=1 << 20)
    net.elect(1)
    for _ in range(10):
        net.propose(1, b"x")
    leader = net.core(1)
    _snapshot_now(net, 1, b"state")
    assert leader.log.offset == leader.applied_handed - 3  # the count bounds small entries
