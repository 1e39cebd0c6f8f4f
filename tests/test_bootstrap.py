"""The pure parts of restarting, joining and founding (no cluster needed)."""

from __future__ import annotations

import pytest

from tsconsensus import JoinError, NodeUnreachableError, Peer
from tsconsensus.native_start import (
    Identity,
    Joined,
    bootstrap_set,
    decide_start,
    derive_cluster_id,
)
from tsconsensus.raft import EntryKind, InitialState, MemoryStorage
from tsconsensus.raft.codec import membership_from_bytes

TAG = "tag:db"


def peer(n: int, tags: tuple[str, ...] = (TAG,), online: bool = True) -> Peer:
    return Peer(
        id=f"n{n}", hostname=f"h{n}", addresses=(f"100.64.0.{n}",), tags=tags, online=online
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def raft(n: int) -> str:
    return f"100.64.0.{n}:6270"


class World:
    """Nodes 1..9 with member ids 1001.., each storage in memory; who is in a cluster."""

    def __init__(self) -> None:
        self.storages = {n: MemoryStorage() for n in range(1, 10)}
        self.cluster: dict[int, int] = {}  # node -> cluster id

    def identity(self, n: int) -> Identity:
        return Identity(self.storages[n].member_id, self.cluster.get(n, 0), raft(n))

    def identify(self, p: Peer) -> Identity:
        n = int(p.address.rsplit(".", 1)[1])
        if n in self.down:
            raise NodeUnreachableError(f"{p.hostname} is not listening")
        return self.identity(n)

    down: set[int] = set()

    def decide(self, me: int, peers: list[Peer], **kw: object) -> tuple[InitialState, int]:
        clock = FakeClock()

        def join(p: Peer) -> Joined:
            n = int(p.address.rsplit(".", 1)[1])
            return Joined(self.cluster[n])

        initial = decide_start(
            storage=self.storages[me],
            me=self.identity(me),
            tag=TAG,
            peers=lambda: peers,
            identify=self.identify,
            join=join,
            bootstrap_expect=kw.pop("expect", 3),  # type: ignore[arg-type]
            follow_only=kw.pop("follow_only", False),  # type: ignore[arg-type]
            timeout_s=kw.pop("timeout_s", 10.0),  # type: ignore[arg-type]
            sleep=clock.sleep,
            monotonic=clock.monotonic,
        )
        cid = self.storages[me].cluster_id
        self.cluster[me] = cid
        return initial, cid


def test_bootstrap_set_is_the_same_lowest_ids_for_everyone() -> None:
    ids = [raft(3), raft(1), raft(2), raft(9)]
    assert bootstrap_set(ids, 3) == [raft(1), raft(2), raft(3)]
    assert bootstrap_set(list(reversed(ids)), 3) == bootstrap_set(ids, 3)
    assert bootstrap_set(ids[:2], 3) is None
    assert bootstrap_set(ids, 0) == sorted(ids)


def test_three_nodes_starting_at_once_found_one_cluster_with_one_first_entry() -> None:
    world = World()
    everyone = [peer(1), peer(2), peer(3), peer(4, tags=())]
    results = [world.decide(n, [p for p in everyone if p.id != f"n{n}"]) for n in (1, 2, 3)]
    clusters = {cid for _, cid in results}
    assert len(clusters) == 1
    ids = [world.storages[n].member_id for n in (1, 2, 3)]
    assert clusters == {derive_cluster_id(ids)}
    firsts = {initial.entries for initial, _ in results}
    # every founder may have joined an earlier founder instead: then its log is empty
    firsts.discard(())
    assert len(firsts) == 1
    (entry,) = firsts.pop()
    assert entry.index == 1 and entry.kind is EntryKind.MEMBERSHIP
    assert membership_from_bytes(entry.data).voters == frozenset(ids)


def test_too_few_online_waits_then_gives_up_with_the_reason() -> None:
    with pytest.raises(JoinError, match="2 of 3 tagged nodes online"):
        World().decide(1, [peer(2), peer(3, online=False)])


def test_a_founder_waits_for_every_founders_member_id() -> None:
    world = World()
    world.down = {3}
    with pytest.raises(JoinError, match=r"member ids of 100\.64\.0\.3"):
        world.decide(1, [peer(2), peer(3)])


def test_an_existing_cluster_is_joined_not_founded() -> None:
    world = World()
    world.cluster = {1: 77, 2: 77, 3: 77}
    initial, cid = world.decide(7, [peer(1), peer(2), peer(3)])
    assert cid == 77 and initial.entries == ()


def test_follow_only_never_founds() -> None:
    with pytest.raises(JoinError, match="follow-only"):
        World().decide(1, [peer(2), peer(3)], follow_only=True)


def test_a_node_with_state_restarts_from_it_and_asks_nobody() -> None:
    world = World()
    world.storages[1].set_cluster_id(5)

    def nobody(p: Peer) -> Identity:
        raise AssertionError("a restarting node asked a peer")

    world.identify = nobody  # type: ignore[method-assign]
    assert world.decide(1, [peer(2)])[1] == 5
