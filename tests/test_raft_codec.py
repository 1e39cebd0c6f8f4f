"""The engine's binary codec: round trips, size limits, and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsconsensus.errors import DecodeError
from tsconsensus.raft import (
    CoreConfig,
    Entry,
    EntryKind,
    HardState,
    Membership,
    Message,
    MessageType,
    SnapshotMeta,
)
from tsconsensus.raft.codec import (
    decode_entry,
    decode_hard_state,
    decode_message,
    encode_entry,
    encode_hard_state,
    encode_membership,
    encode_message,
    membership_from_bytes,
)
from tsconsensus.raft.messages import ENTRY_OVERHEAD, Ready

u64 = st.integers(0, 2**64 - 1)
ids = st.integers(1, 2**64 - 1)
entries = st.builds(Entry, u64, u64, st.sampled_from(list(EntryKind)), st.binary(max_size=64), u64)
memberships = st.builds(
    lambda v, learners, r, a: Membership(
        frozenset(v), frozenset(learners) - frozenset(v), {i: a for i in v}, frozenset(r)
    ),
    st.sets(ids, max_size=5),
    st.sets(ids, max_size=3),
    st.sets(ids, max_size=3),
    st.text(max_size=20),
)
messages = st.builds(
    Message,
    type=st.sampled_from(list(MessageType)),
    to=ids,
    frm=ids,
    term=u64,
    index=u64,
    log_term=u64,
    entries=st.lists(entries, max_size=4).map(tuple),
    commit=u64,
    reject=st.booleans(),
    hint_index=u64,
    hint_term=u64,
    context=u64,
    snapshot=st.none() | st.builds(SnapshotMeta, u64, u64, memberships, ids, u64),
    offset=u64,
    size=u64,
    data=st.binary(max_size=64),
    checksum=st.integers(0, 2**32 - 1),
)


@given(messages)
def test_message_round_trip(m: Message) -> None:
    assert decode_message(encode_message(m)) == m


@given(entries)
def test_entry_round_trip_and_overhead_bound(e: Entry) -> None:
    raw = encode_entry(e)
    assert decode_entry(raw) == (e, len(raw))
    assert len(raw) <= len(e.data) + ENTRY_OVERHEAD


@given(memberships)
def test_membership_round_trip(m: Membership) -> None:
    assert membership_from_bytes(encode_membership(m)) == m


def test_hard_state_round_trip() -> None:
    hs = HardState(7, 2**63, 99)
    assert decode_hard_state(encode_hard_state(hs)) == hs


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(raw: bytes) -> None:
    for decode in (decode_message, membership_from_bytes, decode_hard_state):
        try:
            decode(raw)
        except DecodeError:
            pass


@given(messages, st.data())
def test_truncated_or_extended_message_is_refused(m: Message, data: st.DataObject) -> None:
    raw = encode_message(m)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DecodeError):
        decode_message(raw[:cut])
    with pytest.raises(DecodeError):
        decode_message(raw + b"\0")


def test_a_huge_declared_entry_count_is_refused_before_looping() -> None:
    m = encode_message(Message(MessageType.APPEND, to=1, frm=2, term=1))
    # patch the entry count field (after the fixed fields) to 2**32-1
    from tsconsensus.raft.codec import _MESSAGE

    fields = list(_MESSAGE.unpack_from(m))
    fields[14] = 2**32 - 1
    with pytest.raises(DecodeError, match="truncated entries"):
        decode_message(_MESSAGE.pack(*fields))


def test_limits_nest_inside_each_other() -> None:
    CoreConfig(id=1, cluster_id=1).validate()
    with pytest.raises(ValueError, match=r"max_entry_bytes .* must fit in a message"):
        CoreConfig(id=1, cluster_id=1, max_entry_bytes=8 << 20).validate()
    with pytest.raises(ValueError, match="max_batch_bytes"):
        CoreConfig(id=1, cluster_id=1, max_batch_bytes=8 << 20).validate()
    with pytest.raises(ValueError, match="snapshot_chunk_bytes"):
        CoreConfig(id=1, cluster_id=1, snapshot_chunk_bytes=4 << 20).validate()
    with pytest.raises(ValueError, match="max_uncommitted_bytes"):
        CoreConfig(id=1, cluster_id=1, max_uncommitted_bytes=1024).validate()
    with pytest.raises(ValueError, match="election_ticks_max"):
        CoreConfig(id=1, cluster_id=1, election_ticks_min=5, election_ticks_max=5).validate()
    with pytest.raises(ValueError, match="id 0"):
        CoreConfig(id=0, cluster_id=1).validate()


def test_messages_and_readies_are_immutable_and_a_ready_is_true_only_with_work() -> None:
    m = Message(MessageType.APPEND, to=2, frm=1, term=3, index=4)
    with pytest.raises(AttributeError):
        m.term = 5  # type: ignore[misc]
    assert m._replace(term=5).term == 5 and m.term == 3
    assert m.index == 4  # the field, not tuple.index
    assert not Ready() and not Ready(last_term=7)  # positions alone are no work
    assert Ready(messages=(m,)) and Ready(snapshot_due=True)
    rd = Ready(committed=())
    with pytest.raises(AttributeError):
        rd.committed = ()  # type: ignore[misc]
