"""NoticeHold: commit notices wait briefly and are dropped when an append to the same member
carries the commit index; everything else goes out at once (a real event loop)."""

from __future__ import annotations

import asyncio

import pytest

from tsconsensus.raft import Entry, Message, MessageType
from tsconsensus.raft.messages import COMMIT_NOTICE
from tsconsensus.raft.notice_hold import NoticeHold

from .transport_net import until

MT = MessageType


def notice(to: int, commit: int) -> Message:
    return Message(
        MT.APPEND,
        to=to,
        frm=1,
        term=2,
        index=commit,
        log_term=2,
        commit=commit,
        context=COMMIT_NOTICE,
    )


def test_a_notice_waits_and_goes_out_when_nothing_carries_its_commit() -> None:
    async def main() -> None:
        sent: list[Message] = []
        hold = NoticeHold(asyncio.get_running_loop(), sent.append, 0.01)
        hold.send(notice(2, 5))
        hold.send(notice(3, 5))
        hold.send(notice(2, 6))  # a newer one replaces the older
        assert sent == [] and hold.held == 2
        took = await until(lambda: len(sent) == 2, "the held notices")
        assert took < 1.0
        assert sorted(sent, key=lambda m: m.to) == [notice(2, 6), notice(3, 5)]
        assert hold.held == 0

    asyncio.run(main())


def test_an_append_with_the_commit_replaces_the_notice_and_nothing_else_does() -> None:
    async def main() -> None:
        sent: list[Message] = []
        hold = NoticeHold(asyncio.get_running_loop(), sent.append, 0.05)
        append = Message(
            MT.APPEND,
            to=2,
            frm=1,
            term=2,
            index=5,
            log_term=2,
            entries=(Entry(6, 2, data=b"x"),),
            commit=5,
        )
        older = Message(MT.APPEND, to=4, frm=1, term=2, index=3, log_term=2, commit=3)
        hold.send(notice(2, 5))
        hold.send(notice(3, 5))
        hold.send(notice(4, 5))
        hold.send(append)  # carries commit 5 to member 2, and checks its log
        # a heartbeat checks no log: a follower whose appends were lost must still see the
        # notice, reject it, and so be probed at once
        hold.send(Message(MT.HEARTBEAT, to=3, frm=1, term=2, commit=5))
        hold.send(older)  # an append that says less than the notice
        hold.send(Message(MT.READ_INDEX_RESP, to=4, frm=1, term=2, index=5))
        assert [m.to for m in sent] == [2, 3, 4, 4] and sent[0] is append
        assert hold.held == 2
        await until(lambda: len(sent) == 6, "the notices to members 3 and 4")
        assert sorted(sent[-2:], key=lambda m: m.to) == [notice(3, 5), notice(4, 5)]

    asyncio.run(main())


def test_release_and_flush_send_what_is_held_at_once() -> None:
    async def main() -> None:
        sent: list[Message] = []
        hold = NoticeHold(asyncio.get_running_loop(), sent.append, 60.0)
        hold.send(notice(2, 5))
        hold.send(notice(3, 5))
        hold.release(2)  # e.g. before a forwarded command's result goes to member 2
        hold.release(4)  # nothing held for it: nothing sent
        assert sent == [notice(2, 5)] and hold.held == 1
        hold.flush()  # e.g. when the node stops
        assert sent == [notice(2, 5), notice(3, 5)] and hold.held == 0
        with pytest.raises(ValueError, match="delay_s"):
            NoticeHold(asyncio.get_running_loop(), sent.append, -1.0)

    asyncio.run(main())
