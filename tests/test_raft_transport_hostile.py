"""The engine's transport against hostile or broken peers: oversized, forged, replayed, pickled,
slow and random frames. Each must end in a dropped frame or a closed connection, never in a
decoder seeing unauthenticated bytes, a stalled loop or an exception.

Real sockets on 127.a.b.x only; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tsconsensus.raft._receiver as receiver_module
from tsconsensus.raft import Message, MessageType
from tsconsensus.raft.codec import encode_message
from tsconsensus.raft.frames import (
    HEADER_BYTES,
    MAC_BYTES,
    PREFIX_BYTES,
    FrameError,
    FrameHeader,
    FrameKind,
    FrameMac,
    derive_key,
    encode_frame,
    encode_header,
    parse_header,
)

from .transport_net import CLUSTER, KEY, TAG_ONLY_KEY, Net, Raw, append, run, until


class Canary:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_a_frame_declaring_2_gb_is_refused_at_once_while_other_peers_are_served() -> None:
    async def main() -> None:
        async with Net() as net:
            a, b = await net.node(1), await net.node(2)
            a.echo = True
            await net.round_trip(b, a)  # connections up both ways
            hostile = await Raw.connect(a.address, net.host(9))
            header = encode_header(FrameKind.RAFT, 2**31, CLUSTER, 9, 1) + bytes(MAC_BYTES)

            async def attack() -> float:
                await hostile.send(header)
                try:  # go on as if the 2 GB were coming
                    for _ in range(1000):
                        await hostile.send(b"\0" * 65536)
                except (ConnectionError, asyncio.TimeoutError):
                    pass
                return await hostile.closed()

            async def round_trips() -> list[float]:
                return [await net.round_trip(b, a, term=t) for t in range(30)]

            closed_after, times = await asyncio.gather(attack(), round_trips())
            assert closed_after < 1.0
            assert max(times) < 0.5, f"round trips stalled: {max(times):.3f} s"
            stats = a.transport.stats
            assert stats["dropped_too_large"] == 1 and stats["errors"] == 0
            assert stats["bytes_received"] < 10_000  # the heartbeats only: no body was taken

    run(main())


def test_a_peer_without_the_key_holds_no_more_buffer_than_it_sends() -> None:
    """A header declaring 3 MB (under the limit) does not reserve 3 MB: until a frame with a
    valid MAC, the read buffer grows with the bytes that arrive. The frame then fails its MAC."""

    async def main() -> None:
        async with Net() as net:
            a = await net.node(1)
            declared, sent = 3 * 1024 * 1024, 200 * 1024
            forger = await Raw.connect(a.address, net.host(9))
            header = encode_header(FrameKind.RAFT, declared, CLUSTER, 9, 1) + bytes(MAC_BYTES)
            await forger.send(header + b"\0" * sent)
            conns = a.transport._receiver._conns
            await until(lambda: any(c.fill >= sent for c in conns), "the first 200 KiB")
            held = max(len(c.rbuf) for c in conns)
            assert sent <= held <= 2 * sent + PREFIX_BYTES, held
            await forger.send(b"\0" * (declared - sent))
            assert await forger.closed() < 1.0
            assert a.transport.stats["dropped_bad_mac"] == 1 and a.received == []

    run(main())


def test_a_mac_derived_from_the_tag_alone_closes_the_connection_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[bytes] = []
    real_decode = receiver_module.decode_message  # type: ignore[attr-defined]

    def spy(body: bytes) -> Message:
        decoded.append(body)
        return real_decode(body)

    monkeypatch.setattr(receiver_module, "decode_message", spy)

    async def main() -> None:
        async with Net() as net:
            a = await net.node(1)
            body = encode_message(append(9, 1))
            forger = await Raw.connect(a.address, net.host(9))
            await forger.send(forger.frame(forger.mac(TAG_ONLY_KEY), body))
            assert await forger.closed() < 1.0
            assert a.received == [] and decoded == []
            assert a.transport.stats["dropped_bad_mac"] == 1
            # the same frame under the cluster's real key is decoded and delivered
            member = await Raw.connect(a.address, net.host(9))
            await member.send(member.frame(member.mac(KEY), body))
            await until(lambda: a.received, "the genuine frame")
            assert decoded == [body]

    run(main())


def test_a_pickle_frame_executes_nothing(tmp_path: Path) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Canary(control))).close()
    assert control.exists(), "the canary must be live for this test to mean anything"
    canary = tmp_path / "canary"
    payload = pickle.dumps(Canary(canary))

    async def main() -> None:
        async with Net() as net:
            a = await net.node(1)
            for kind in (FrameKind.RAFT, FrameKind.DRIVER):
                raw = await Raw.connect(a.address, net.host(9))
                await raw.send(raw.frame(raw.mac(TAG_ONLY_KEY), payload, kind=kind))
                assert await raw.closed() < 1.0
            raw = await Raw.connect(a.address, net.host(9))
            await raw.send(payload)  # no header at all
            assert await raw.closed() < 1.0
            # even under the real key a RAFT body is only ever parsed by the codec
            raw = await Raw.connect(a.address, net.host(9))
            await raw.send(raw.frame(raw.mac(KEY), payload))
            await until(lambda: a.transport.stats["dropped_malformed"] == 2, "the drop")
            raw.close()
            stats = a.transport.stats
            assert stats["dropped_bad_mac"] == 2 and a.received == []

    run(main())
    assert not canary.exists()


def test_frames_for_others_or_inconsistent_ones_are_dropped_without_closing() -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node(1)
            raw = await Raw.connect(a.address, net.host(9))
            mac = raw.mac()
            good = encode_message(append(9, 1))
            await raw.send(
                raw.frame(mac, good, receiver=77)
                + raw.frame(mac, good, cluster_id=CLUSTER + 1)
                + raw.frame(mac, encode_message(append(5, 1)))  # message from someone else
                + raw.frame(mac, encode_message(append(9, 77)))  # message for someone else
                + raw.frame(mac, b"\xff" * 40)  # authenticated nonsense
                + raw.frame(mac, good)
            )
            await until(lambda: a.received, "the one good frame")
            assert a.received == [append(9, 1)]
            stats = a.transport.stats
            assert stats["dropped_wrong_receiver"] == 1 and stats["dropped_wrong_cluster"] == 1
            assert stats["dropped_malformed"] == 3 and stats["connections_in"] == 1
            await raw.send(raw.frame(mac, good, sender=0))  # a frame must name its sender
            assert await raw.closed() < 1.0
            assert a.transport.stats["dropped_malformed"] == 4

    run(main())


def test_replayed_or_reordered_frames_are_refused() -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node(1)
            first = await Raw.connect(a.address, net.host(9))
            mac = first.mac()
            f1 = first.frame(mac, encode_message(append(9, 1, index=1)))
            f2 = first.frame(mac, encode_message(append(9, 1, index=2)))
            await first.send(f1)
            await until(lambda: a.received, "the first frame")
            await first.send(f1)  # replayed on its own connection
            assert await first.closed() < 1.0
            for frames in (f1, f2):  # replayed on a new connection (a new nonce)
                other = await Raw.connect(a.address, net.host(9))
                await other.send(frames)
                assert await other.closed() < 1.0
            third = await Raw.connect(a.address, net.host(9))
            mac = third.mac()
            g1 = third.frame(mac, encode_message(append(9, 1, index=3)))
            g2 = third.frame(mac, encode_message(append(9, 1, index=4)))
            await third.send(g2 + g1)  # reordered
            assert await third.closed() < 1.0
            assert a.received == [append(9, 1, index=1)]
            assert a.transport.stats["dropped_bad_mac"] == 4

    run(main())


def test_slow_bodies_and_silent_connections_are_cut_off() -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node(1, frame_deadline_s=0.3)
            slow = await Raw.connect(a.address, net.host(9))
            await slow.send(encode_header(FrameKind.RAFT, 1000, CLUSTER, 9, 1) + bytes(26))
            silent = await Raw.connect(a.address, net.host(9))
            took = await asyncio.gather(slow.closed(), silent.closed())
            assert max(took) < 1.5
            assert a.transport.stats["timeouts"] == 2

    run(main())


def test_silent_connections_from_one_source_cannot_crowd_out_the_others() -> None:
    async def main() -> None:
        async with Net() as net:
            a, b = await net.node(1), await net.node(2)
            crowd = [await Raw.connect(a.address, net.host(9)) for _ in range(16)]
            with pytest.raises(asyncio.IncompleteReadError):  # no hello for the 17th
                await Raw.connect(a.address, net.host(9))
            other = await Raw.connect(a.address, net.host(8))  # another source still served
            b.transport.send(append(2, 1))
            await until(lambda: a.received, "a member's message")
            for raw in [*crowd, other]:
                raw.close()
            assert a.transport.stats["denied"] == 1

    run(main())


@settings(max_examples=500)
@given(st.binary(min_size=HEADER_BYTES, max_size=PREFIX_BYTES), st.integers(1100, 2**33))
def test_the_header_parser_takes_any_bytes(prefix: bytes, limit: int) -> None:
    try:
        header = parse_header(prefix, limit)
    except FrameError as exc:
        assert exc.reason in ("malformed", "too-large")
    else:
        assert isinstance(header, FrameHeader) and header.sender != 0
        assert header.length <= limit - PREFIX_BYTES


def test_a_frame_mac_covers_every_byte() -> None:
    key, nonce = derive_key(KEY), b"n" * 16
    frame = encode_frame(FrameMac(key, nonce), 1, CLUSTER, 9, 1, b"body")
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        assert not FrameMac(key, nonce).verify(*_split(bytes(bad)))
    assert FrameMac(key, nonce).verify(*_split(frame))
    assert not FrameMac(key, b"m" * 16).verify(*_split(frame))


def _split(frame: bytes) -> tuple[bytes, bytes, bytes]:
    return frame[:HEADER_BYTES], frame[HEADER_BYTES:PREFIX_BYTES], frame[PREFIX_BYTES:]


# A piece of a fuzzed stream: raw bytes, or a frame sealed (under the right key or not) after
# the hello, optionally with one byte flipped.
_frames = st.tuples(
    st.sampled_from([1, 1, 1, 2, 3, 0]),  # kind (3 and 0 unknown)
    st.sampled_from([CLUSTER, CLUSTER, CLUSTER, CLUSTER + 1, 0]),
    st.sampled_from([9, 9, 9, 0, 1]),  # sender
    st.sampled_from([1, 1, 2]),  # receiver
    st.one_of(
        st.binary(max_size=200),
        st.builds(lambda i: encode_message(append(9, 1, index=i)), st.integers(0, 2**64 - 2)),
        st.just(encode_message(Message(MessageType.HEARTBEAT, to=1, frm=9, term=1))[:-1]),
    ),
    st.sampled_from([True, True, True, False]),  # sealed under the right key
    st.integers(0, 30_000).map(lambda i: i if i < 10_000 else None),  # a byte to flip
)
GOOD_FRAME = (1, CLUSTER, 9, 1, encode_message(append(9, 1)), True, None)
_pieces = st.lists(st.one_of(st.binary(min_size=1, max_size=120), _frames), max_size=5)


def _build(pieces: list[Any], nonce: bytes) -> bytes:
    macs = {True: FrameMac(derive_key(KEY), nonce), False: FrameMac(derive_key(b"x"), nonce)}
    out = bytearray()
    for piece in pieces:
        if isinstance(piece, bytes):
            out += piece
            continue
        kind, cluster, sender, receiver, body, right_key, flip = piece
        frame = bytearray(encode_frame(macs[right_key], kind, cluster, sender, receiver, body))
        if flip is not None:
            frame[flip % len(frame)] ^= 0x5A
        out += frame
    return bytes(out)


def test_random_streams_end_in_a_clean_drop_or_close() -> None:
    loop = asyncio.new_event_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    net = Net()
    a = loop.run_until_complete(net.node(1))

    async def feed(pieces: list[Any]) -> None:
        raw = await Raw.connect(a.address, net.host(9))
        await raw.send(_build(pieces, raw.nonce))
        raw.writer.write_eof()
        await raw.closed(timeout=5.0)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_pieces)
    @example([GOOD_FRAME, b"\x00", GOOD_FRAME])
    @example([GOOD_FRAME, (1, CLUSTER, 9, 1, b"junk", True, None), GOOD_FRAME])
    def one_stream(pieces: list[Any]) -> None:
        loop.run_until_complete(asyncio.wait_for(feed(pieces), 10.0))
        stats = a.transport.stats
        assert stats["errors"] == 0 and stats["callback_errors"] == 0
        assert all(m.to == 1 and m.frm == 9 for m in a.received)

    try:
        one_stream()
        loop.run_until_complete(until(lambda: a.transport.stats["connections_in"] == 0, "all"))
        stats = a.transport.stats
        # the streams reached every outcome, not only the first check
        for outcome in ("frames_received", "dropped_bad_mac", "dropped_malformed"):
            assert stats[outcome] > 0, stats
    finally:
        loop.run_until_complete(net.__aexit__(None, None, None))
        loop.close()
    assert not loop_errors, loop_errors
