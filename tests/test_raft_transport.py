"""The engine's transport between well-behaved members: delivery both ways, source addresses,
reconnection, unreachable peers, bounded queues, authorization at accept and on recheck.

Hostile peers (oversized, forged, replayed, pickled, fuzzed frames) are in
test_raft_transport_hostile.py. Real sockets on 127.a.b.x only; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tsconsensus.raft import Message, MessageType
from tsconsensus.raft._receiver import _READ_BUFFER_BYTES
from tsconsensus.raft.codec import encode_message
from tsconsensus.raft.frames import PREFIX_BYTES, FrameKind, encode_hello
from tsconsensus.raft.transport import Streams, Transport

from .transport_net import CLUSTER, Net, Raw, append, run, until


def test_frames_cut_at_any_byte_or_spread_over_many_reads_arrive_whole_and_in_order() -> None:
    """The receiver keeps only an incomplete frame's bytes and completes it from later reads:
    two frames cut at every byte, and a 3 MB body sent in 64 KiB pieces with a small frame
    glued to its tail; the connection's read buffer grows for that body only."""

    async def main() -> None:
        async with Net() as net:
            a = await net.node(1)
            first, second = append(9, 1, index=1), append(9, 1, index=2, data=b"y" * 7)
            for cut in range(1, 2 * PREFIX_BYTES + 200):
                raw = await Raw.connect(a.address, net.host(9))
                mac = raw.mac()
                stream = raw.frame(mac, encode_message(first)) + raw.frame(
                    mac, encode_message(second)
                )
                cut = min(cut, len(stream) - 1)
                before = len(a.received)
                await raw.send(stream[:cut])
                for _ in range(3):  # let the receiver read the first piece on its own
                    await asyncio.sleep(0)
                await raw.send(stream[cut:])
                await until(lambda n=before + 2: len(a.received) >= n, f"both frames at {cut}")
                assert a.received[before:] == [first, second], cut
                raw.close()
            raw = await Raw.connect(a.address, net.host(9))
            mac = raw.mac()
            big = bytes(range(256)) * (3 * 4096)
            stream = raw.frame(mac, big, kind=FrameKind.DRIVER) + raw.frame(
                mac, encode_message(first)
            )
            for at in range(0, len(stream), 65536):
                await raw.send(stream[at : at + 65536])
            await until(lambda: a.driver, "the 3 MB driver frame")
            assert a.driver == [(9, big)]
            await until(lambda: a.received[-1:] == [first], "the frame after it")
            buffers = [len(c.rbuf) for c in a.transport._receiver._conns]
            assert buffers and max(buffers) == _READ_BUFFER_BYTES
            stats = a.transport.stats
            assert stats["errors"] == 0 and stats["dropped_bad_mac"] == 0

    run(main())


def test_messages_and_driver_frames_flow_every_way_in_order() -> None:
    async def main() -> None:
        async with Net() as net:
            nodes = [await net.node(m) for m in (1, 2, 3)]
            for a in nodes:
                for b in nodes:
                    if a is not b:
                        for i in range(50):
                            a.transport.send(append(a.member, b.member, index=i))
                        a.transport.send_driver(b.member, f"{a.member}->{b.member}".encode())
            await until(lambda: all(len(n.received) == 100 for n in nodes), "every message")
            await until(lambda: all(len(n.driver) == 2 for n in nodes), "every driver frame")
            for b in nodes:
                for a in nodes:
                    if a is not b:
                        got = [m for m in b.received if m.frm == a.member]
                        assert got == [append(a.member, b.member, index=i) for i in range(50)]
                assert sorted(b.driver) == sorted(
                    (a.member, f"{a.member}->{b.member}".encode()) for a in nodes if a is not b
                )
                stats = b.transport.stats
                assert stats["frames_received"] == 102 and stats["frames_sent"] == 102
                assert stats["connections_in"] == 2 and stats["connections_out"] == 2
                assert stats["errors"] == stats["callback_errors"] == 0

    run(main())


def test_outgoing_connections_leave_from_the_nodes_own_address() -> None:
    async def main() -> None:
        async with Net() as net:
            a, b = await net.node(1), await net.node(2)
            a.transport.send(append(1, 2))
            await until(lambda: b.received, "the message")
            # b authorized the connection by the address a listens on, not 127.0.0.1
            assert [ip for ip, _ in b.authorized] == [a.host]
            assert a.host != "127.0.0.1"

    run(main())


def test_reconnects_after_the_peer_restarts_and_reports_it_unreachable_meanwhile() -> None:
    async def main() -> None:
        async with Net() as net:
            a, b = await net.node(1), await net.node(2)
            port = b.address[1]
            a.transport.send(append(1, 2))
            await until(lambda: b.received, "the first message")
            await b.transport.stop()

            def send_one() -> bool:
                a.transport.send(append(1, 2, index=7))
                return bool(a.unreachable)

            await until(send_one, "a to report b unreachable")
            assert a.unreachable[0] == 2
            b2 = await net.node(2, port=port)
            await until(lambda: send_one() and b2.received, "a message to the restarted b")
            assert b2.received[0] == append(1, 2, index=7)
            assert a.transport.stats["connections_dialled"] == 2

    run(main())


def test_dead_unknown_and_hanging_peers_are_reported_unreachable() -> None:
    async def never_answers(host: str, port: int) -> Streams:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def main() -> None:
        async with Net() as net:
            a = await net.node(1)
            net.addresses[5] = (net.host(5), 1)  # nothing listens there
            a.transport.send(append(1, 5))
            a.transport.send(append(1, 6))  # no address known
            await until(lambda: sorted(a.unreachable) == [5, 6], "both reported")
            assert a.transport.stats["dial_failures"] == 2
            assert a.transport.stats["dropped_unreachable"] == 2

            hanging = await net.node(2, dial=never_answers, connect_timeout_s=0.2)
            hanging.transport.send(append(2, 1))
            took = await until(lambda: hanging.unreachable == [1], "the dial to time out")
            assert took < 2.0

    run(main())


def test_a_peer_whose_process_is_gone_is_reported_down_and_a_live_one_is_not() -> None:
    async def main() -> None:
        async with Net() as net:
            a, b, c = await net.node(1), await net.node(2), await net.node(3)
            for sender in (b, c):
                sender.transport.send(append(sender.member, 1))
            await until(lambda: len(a.received) == 2, "both connections")
            # c closes its connection but still listens: a's probe is answered
            c.transport.disconnect(1)
            await until(lambda: c.transport.stats["connections_accepted"] == 1, "a's probe")
            # b's process goes: its connection ends and nothing listens there any more
            await b.transport.stop()
            await until(lambda: a.down == [2], "b reported down")
            # a dying process: its connection ends, its listener still accepts but says nothing
            dying = await asyncio.start_server(lambda r, w: w.transport.abort(), net.host(4), 0)
            net.addresses[4] = (net.host(4), dying.sockets[0].getsockname()[1])
            raw = await Raw.connect(a.address, net.host(4))
            await raw.send(raw.frame(raw.mac(), b"", kind=2, sender=4))
            await until(lambda: a.transport.stats["frames_received"] == 3, "4's frame")
            raw.close()
            await until(lambda: a.down == [2, 4], "4 reported down")
            dying.close()
            assert a.transport.stats["peers_down"] == 2
            assert a.unreachable == [] and b.down == c.down == []

    run(main())


def test_denied_source_is_closed_before_anything_is_read(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node(1)
            b = await net.node(2)
            net.denied.add(b.host)
            # A well-formed transport from a denied address: every dial ends unreachable.
            b.transport.send(append(2, 1))
            await until(lambda: b.unreachable, "b to give up on a")
            # A raw client that does not wait for the hello and sends a frame at once.
            for _ in range(2):
                raw = await Raw.connect(a.address, net.host(2), hello=False)
                raw.nonce = bytes(16)
                await raw.send(raw.frame(raw.mac(), b"x" * 100))
                assert await raw.closed() < 1.0
                assert raw.got == b""  # not even a hello
            assert a.received == [] and a.transport.stats["denied"] >= 3
            assert a.transport.stats["bytes_received"] == 0

    with caplog.at_level(logging.WARNING, logger="tsconsensus.transport"):
        run(main())
    refusals = [r for r in caplog.records if "refused transport connection" in r.getMessage()]
    assert len(refusals) == 1, "denials are logged once per source per interval"


def test_authorize_that_fails_or_hangs_denies() -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node(1, connect_timeout_s=0.3)
            net.authorize_error = True
            raw = await Raw.connect(a.address, net.host(9), hello=False)
            assert await raw.closed() < 1.0 and raw.got == b""
            net.authorize_error = False
            net.gate = asyncio.get_running_loop().create_future()  # never answers
            raw = await Raw.connect(a.address, net.host(8), hello=False)
            assert await raw.closed() < 1.5 and raw.got == b""
            assert a.transport.stats["denied"] == 2 and a.transport.stats["errors"] == 0

    run(main())


def _kernel_rx_queue(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """Bytes the kernel holds unread for the socket ``local`` <- ``remote`` (/proc/net/tcp)."""

    def hexaddr(host: str, port: int) -> str:
        return "".join(f"{int(o):02X}" for o in reversed(host.split("."))) + f":{port:04X}"

    want = (hexaddr(*local), hexaddr(*remote))
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == want:
            return int(fields[4].split(":")[1], 16)
    return None


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_no_byte_is_read_from_the_socket_until_authorize_answers() -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node(1)
            net.gate = asyncio.get_running_loop().create_future()
            raw = await Raw.connect(a.address, net.host(9), hello=False)
            await raw.send(b"\x00" * 1000)
            source = raw.writer.get_extra_info("sockname")
            await until(lambda: a.authorized, "authorize to be called")
            await until(
                lambda: _kernel_rx_queue(a.address, source) == 1000,
                "the bytes to sit unread in the kernel while authorize runs",
            )
            net.denied.add(net.host(9))
            net.gate.set_result(None)
            assert await raw.closed() < 1.0
            assert a.transport.stats["denied"] == 1 and a.transport.stats["bytes_received"] == 0

    run(main())


def test_recheck_closes_connections_of_peers_that_lost_their_tag() -> None:
    async def main() -> None:
        async with Net() as net:
            a, b = await net.node(1), await net.node(2)
            b.transport.send(append(2, 1))
            a.transport.send(append(1, 2))
            await until(lambda: a.received and b.received, "both messages")
            net.denied.add(b.host)
            a.transport.recheck()
            stats = a.transport.stats
            assert stats["revoked"] == 2  # b's connection to a, and a's to b
            assert stats["connections_out"] == 0
            await until(lambda: a.transport.stats["connections_in"] == 0, "b's connection closed")
            b.transport.send(append(2, 1, index=2))
            a.transport.send(append(1, 2, index=2))
            await until(lambda: b.unreachable and a.unreachable, "both to give up")
            assert len(a.received) == 1 and len(b.received) == 1

    run(main())


def test_every_frame_rechecks_its_source() -> None:
    async def main() -> None:
        async with Net() as net:
            a, b = await net.node(1), await net.node(2)
            b.transport.send(append(2, 1))
            await until(lambda: a.received, "the first message")
            net.denied.add(b.host)  # no recheck(): the next frame finds out
            b.transport.send(append(2, 1, index=2))
            await until(lambda: a.transport.stats["revoked"] == 1, "the frame to be refused")
            assert len(a.received) == 1

    run(main())


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_peer_that_never_reads_costs_bounded_memory_and_counted_drops() -> None:
    async def main() -> None:
        done = asyncio.Event()

        async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(encode_hello(bytes(16)))
            await done.wait()  # never reads
            writer.transport.abort()

        async with Net() as net:
            server = await asyncio.start_server(black_hole, net.host(50), 0)
            net.addresses[50] = (net.host(50), server.sockets[0].getsockname()[1])
            a = await net.node(1, queue_limit=1000, write_timeout_s=1.0)
            rss_before = _rss()
            msg = append(1, 50, data=b"y" * 1000)
            for i in range(100_000):
                a.transport.send(msg)
                if i % 1000 == 0:
                    await asyncio.sleep(0)  # let the writer fill the socket
            stats, grown = a.transport.stats, _rss() - rss_before
            assert stats["queued"] <= 1000
            assert stats["queued_bytes"] <= 1000 * 1200
            dropped = stats["dropped_queue_full"] + stats["dropped_unreachable"]
            assert stats["frames_sent"] + dropped + stats["queued"] == 100_000
            assert stats["dropped_queue_full"] >= 50_000, stats
            # 100k frames of ~1.2 kB passed through: ~120 MB unless bounded
            assert grown < 40 * 1024 * 1024, f"resident memory grew by {grown / 1e6:.1f} MB"
            # the write that never drains is noticed and reported
            await until(lambda: 50 in a.unreachable, "the stuck write to be reported", 5.0)
            assert a.transport.stats["timeouts"] >= 1
            done.set()
            server.close()

    run(main(), timeout=60)


def test_cluster_id_zero_accepts_nothing_until_set_and_other_clusters_are_dropped() -> None:
    async def main() -> None:
        async with Net() as net:
            joining = await net.node(1, cluster_id=0)
            other = await net.node(2, cluster_id=CLUSTER + 1)
            b = await net.node(3)
            other.transport.send(append(2, 1))
            b.transport.send(append(3, 1))
            await until(lambda: joining.transport.stats["dropped_no_cluster_id"] == 2, "drops")
            joining.transport.set_cluster_id(CLUSTER)
            other.transport.send(append(2, 1, index=2))
            b.transport.send(append(3, 1, index=2))
            await until(lambda: joining.received, "b's message once the id is known")
            await until(lambda: joining.transport.stats["dropped_wrong_cluster"] == 1, "drop")
            assert joining.received == [append(3, 1, index=2)]
            # dropping a frame is not closing the connection
            assert other.transport.stats["connections_dialled"] == 1
            other.transport.set_cluster_id(CLUSTER)
            other.transport.send(append(2, 1, index=3))
            await until(lambda: len(joining.received) == 2, "other's message after its fix")
            assert other.transport.stats["connections_dialled"] == 1

    run(main())


def test_disconnect_stop_and_argument_checks() -> None:
    async def main() -> None:
        async with Net() as net:
            a, b = await net.node(1), await net.node(2)
            a.transport.send(append(1, 2))
            await until(lambda: b.received, "the message")
            a.transport.disconnect(2)
            assert a.transport.stats["connections_out"] == 0
            await until(lambda: b.transport.stats["connections_in"] == 0, "b to see it close")
            a.transport.send(Message(MessageType.HEARTBEAT, to=1, frm=1, term=1))  # to self
            a.transport.send_driver(2, b"z" * (5 * 1024 * 1024))  # over max_frame_bytes
            stats = a.transport.stats
            assert stats["dropped_unroutable"] == 1 and stats["dropped_too_large"] == 1
            with pytest.raises(OSError, match=rf"{a.host}:{a.address[1]}"):
                await net.node(3, host=1, port=a.address[1])
            await a.transport.stop()
            await a.transport.stop()
            a.transport.send(append(1, 2))  # after stop: dropped, no error
        for bad in ("0.0.0.0", "::", "localhost"):
            with pytest.raises(ValueError):
                Transport(
                    host=bad,
                    port=0,
                    member_id=1,
                    cluster_id=1,
                    key=b"k",
                    authorize=None,  # type: ignore[arg-type]
                    still_allowed=bool,
                    resolve=lambda member: None,
                    on_message=print,
                    on_driver_frame=print,
                    on_unreachable=print,
                )

    run(main())
