"""The transport's wire format, as pure functions: hello, frame header, MAC, limits.

A connection carries frames one way only, from the member that dialled to the member that
accepted. Once the acceptor has authorized the dialler's source address it sends a *hello*::

    hello  = magic "TSCH" | version u8 | 3 zero bytes | nonce (16 random bytes)       24 bytes

and from then on the dialler sends frames, each::

    header = magic "TSCR" | version u8 | kind u8 | flags u16 (0) | body length u32
             | cluster id u64 | sender member id u64 | receiver member id u64         36 bytes
    mac    = BLAKE2b-128, keyed                                                       16 bytes
    body   = body length bytes (RAFT: codec.encode_message; DRIVER: opaque)

all integers big-endian. A frame's MAC is keyed BLAKE2b (key derived from the cluster secret
by :func:`derive_key`) over the connection's whole transcript up to and including that frame:
``nonce | header 1 | body 1 | ... | header n | body n`` (each header carries its body's length,
so the transcript parses one way only). The acceptor's fresh nonce makes a frame recorded on one
connection worthless on any other, and the running transcript makes a frame replayed, dropped
or reordered within its connection fail too: per-connection replay protection at no cost per
frame (one running hash state, no copies, no counters). A 128-bit tag is ample for a MAC:
every wrong guess costs the guesser its connection.

Nothing here performs IO, keeps a clock or logs; errors are :class:`FrameError` (a
:class:`~tsconsensus.errors.DecodeError`). Usable from any thread; a :class:`FrameMac` belongs to
one connection and one thread at a time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import struct
from typing import NamedTuple

from ..errors import DecodeError

Buffer = bytes | bytearray | memoryview

MAGIC = b"TSCR"
HELLO_MAGIC = b"TSCH"
VERSION = 1

HEADER = struct.Struct(">4sBBHIQQQ")
HEADER_BYTES = HEADER.size  # 36
MAC_BYTES = 16
PREFIX_BYTES = HEADER_BYTES + MAC_BYTES
"""What is read before a frame's body: header and MAC."""
NONCE_BYTES = 16
HELLO = struct.Struct(">4sB3x16s")
HELLO_BYTES = HELLO.size  # 24

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024 + 4096
MIN_BODY_RATE = 1_000_000
"""Bytes per second a peer must at least sustain while it sends a body (slowloris guard)."""

_KEY_PERSON = b"tsc-raft-frames1"
_MAC_PERSON = b"tsc-raft-conn-v1"


class FrameKind(enum.IntEnum):
    """What a frame's body is."""

    RAFT = 1
    """A :class:`~tsconsensus.raft.messages.Message` encoded by ``codec.encode_message``."""
    DRIVER = 2
    """Opaque bytes for the node driver (command forwarding)."""


_KINDS = {k.value: k for k in FrameKind}


class FrameError(DecodeError):
    """A hello or header is not what the protocol allows; the connection must be closed.

    ``reason`` is ``"malformed"`` (bad magic, version, kind, flags or sender) or ``"too-large"``
    (the declared length exceeds the limit).
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class FrameHeader(NamedTuple):
    kind: FrameKind
    length: int
    cluster_id: int
    sender: int
    receiver: int


def derive_key(secret: bytes) -> bytes:
    """The 32-byte MAC key every member derives alike from the cluster secret.

    Domain-separated from every other use of the secret (the old adapter's frame key among
    them). An empty or guessable secret gives a guessable key: that is the caller's to refuse.
    """
    return hashlib.blake2b(secret, digest_size=32, person=_KEY_PERSON).digest()


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def encode_hello(nonce: bytes) -> bytes:
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce is {NONCE_BYTES} bytes, not {len(nonce)}")
    return HELLO.pack(HELLO_MAGIC, VERSION, nonce)


def decode_hello(buf: Buffer) -> bytes:
    """The acceptor's nonce; raises :class:`FrameError` if ``buf`` is not a hello."""
    if len(buf) != HELLO_BYTES:
        raise FrameError("malformed", f"hello is {len(buf)} bytes, expected {HELLO_BYTES}")
    magic, version, nonce = HELLO.unpack(buf)
    if magic != HELLO_MAGIC:
        raise FrameError("malformed", "peer did not answer with a transport hello")
    if version != VERSION:
        raise FrameError("malformed", f"peer speaks transport version {version}, not {VERSION}")
    return bytes(nonce)


def encode_header(kind: int, length: int, cluster_id: int, sender: int, receiver: int) -> bytes:
    """Raises :class:`struct.error` if a field is out of range."""
    return HEADER.pack(MAGIC, VERSION, kind, 0, length, cluster_id, sender, receiver)


def parse_header(prefix: Buffer, max_frame_bytes: int) -> FrameHeader:
    """Check everything about a frame that can be checked before its body is read.

    ``prefix`` is at least :data:`HEADER_BYTES` long. The whole frame (header, MAC, body) may
    not exceed ``max_frame_bytes``. Raises :class:`FrameError`; the MAC is *not* checked here
    (it needs the body).
    """
    magic, version, kind, flags, length, cluster_id, sender, receiver = HEADER.unpack_from(prefix)
    if magic != MAGIC or version != VERSION:
        raise FrameError("malformed", "not a transport frame (bad magic or version)")
    known = _KINDS.get(kind)
    if known is None:
        raise FrameError("malformed", f"unknown frame kind {kind}")
    if flags:
        raise FrameError("malformed", f"unknown frame flags {flags:#06x}")
    if sender == 0:
        raise FrameError("malformed", "frame without a sender")
    if length > max_frame_bytes - PREFIX_BYTES:
        raise FrameError(
            "too-large", f"frame declares {length} body bytes, limit {max_frame_bytes}"
        )
    return FrameHeader(known, length, cluster_id, sender, receiver)


def body_deadline_s(length: int, minimum_s: float) -> float:
    """Seconds a peer is given to deliver a body of ``length`` bytes."""
    return max(minimum_s, length / MIN_BODY_RATE)


class FrameMac:
    """The MACs of the frames on one connection (one direction), in order.

    Both ends build one from the shared key and the acceptor's nonce; each :meth:`seal`
    (sender) or :meth:`verify` (receiver) extends the transcript, so both ends must process
    every frame, in order. After a failed :meth:`verify` the connection must be dropped. Not
    thread-safe.
    """

    __slots__ = ("_state",)

    def __init__(self, key: bytes, nonce: bytes) -> None:
        self._state = hashlib.blake2b(key=key, digest_size=MAC_BYTES, person=_MAC_PERSON)
        self._state.update(nonce)

    def seal(self, header: Buffer, body: Buffer) -> bytes:
        """The MAC to send after ``header`` (and before ``body``)."""
        state = self._state
        state.update(header)
        state.update(body)
        return state.digest()  # finalizes a copy: the running state goes on

    def verify(self, header: Buffer, mac: Buffer, body: Buffer) -> bool:
        """True if ``mac`` is the MAC of the next frame, ``header`` + ``body``. Constant time."""
        state = self._state
        state.update(header)
        state.update(body)
        return hmac.compare_digest(mac, state.digest())


def encode_frame(
    mac: FrameMac, kind: int, cluster_id: int, sender: int, receiver: int, body: Buffer
) -> bytes:
    """One whole frame, sealed with (and advancing) ``mac``."""
    header = encode_header(kind, len(body), cluster_id, sender, receiver)
    return header + mac.seal(header, body) + bytes(body)
