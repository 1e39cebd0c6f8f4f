"""NoticeHold: commit notices wait briefly and are dropped when an append or heartbeat to the
same member carries the commit index; everything else goes out at once (a real event loop)."""

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


def test_an_append_or_heartbeat_with_the_commit_replaces_the_notice() -> None:
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
        hold.send(notice(2, 5))
        hold.send(notice(3, 5))
        hold.send(notice(4, 5))
        hold.send(append)  # carries commit 5 to member 2
        hold.send(Message(MT.HEARTBEAT, to=3, frm=1, term=2, commit=5))
        behind = Message(MT.HEARTBEAT, to=4, frm=1, term=2, commit=3)  # capped: says less
        hold.send(behind)
        hold.send(Message(MT.READ_INDEX_RESP, to=4, frm=1, term=2, index=5))
        assert [m.to for m in sent] == [2, 3, 4, 4] and sent[0] is append
        assert hold.held == 1
        await until(lambda: len(sent) == 5, "member 4's notice")
        assert sent[-1] == notice(4, 5)

    asyncio.run(main())


def test_clear_and_flush() -> None:
    async def main() -> None:
        sent: list[Message] = []
        hold = NoticeHold(asyncio.get_running_loop(), sent.append, 0.01)
        hold.send(notice(2, 5))
        hold.clear()
        assert hold.held == 0
        hold.send(notice(3, 9))
        await until(lambda: sent, "the notice held after clear()")
        assert sent == [notice(3, 9)]  # the one held before clear() never went out
        sent.clear()
        hold.send(notice(2, 7))
        hold.flush()
        assert sent == [notice(2, 7)]
        with pytest.raises(ValueError, match="delay_s"):
            NoticeHold(asyncio.get_running_loop(), sent.append, -1.0)

    asyncio.run(main())
