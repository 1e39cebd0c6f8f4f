"""The pure parts of joining and bootstrapping (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsconsensus import JoinError, NodeUnreachableError, Peer
from tsconsensus.bootstrap import bootstrap_set, decide_members, read_members, write_members

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


def unreachable(p: Peer) -> list[str]:
    raise NodeUnreachableError(f"{p.hostname} is not listening")


def test_bootstrap_set_is_the_same_lowest_ids_for_everyone() -> None:
    ids = ["100.64.0.3:6270", "100.64.0.1:6270", "100.64.0.2:6270", "100.64.0.9:6270"]
    assert bootstrap_set(ids, 3) == ["100.64.0.1:6270", "100.64.0.2:6270", "100.64.0.3:6270"]
    assert bootstrap_set(list(reversed(ids)), 3) == bootstrap_set(ids, 3)
    assert bootstrap_set(ids[:2], 3) is None
    assert bootstrap_set(ids, 0) == sorted(ids)


def _decide(tmp: Path, me: int, peers: list[Peer], **kw: object) -> list[str]:
    clock = FakeClock()
    return decide_members(
        me_id=f"100.64.0.{me}:6270",
        raft_port=6270,
        tag=TAG,
        state_dir=str(tmp),
        peers=lambda: peers,
        join=kw.pop("join", unreachable),  # type: ignore[arg-type]
        bootstrap_expect=kw.pop("expect", 3),  # type: ignore[arg-type]
        follow_only=kw.pop("follow_only", False),  # type: ignore[arg-type]
        timeout_s=kw.pop("timeout_s", 10.0),  # type: ignore[arg-type]
        sleep=clock.sleep,
        monotonic=clock.monotonic,
    )


def test_three_nodes_starting_at_once_agree(tmp_path: Path) -> None:
    everyone = [peer(1), peer(2), peer(3), peer(4, tags=())]
    results = [
        _decide(tmp_path / str(n), n, [p for p in everyone if p.id != f"n{n}"]) for n in (1, 2, 3)
    ]
    assert results[0] == results[1] == results[2] == [f"100.64.0.{n}:6270" for n in (1, 2, 3)]


def test_too_few_online_waits_then_gives_up_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(JoinError, match="2 of 3 tagged nodes online"):
        _decide(tmp_path, 1, [peer(2), peer(3, online=False)])


def test_an_existing_cluster_is_joined_not_bootstrapped(tmp_path: Path) -> None:
    def join(p: Peer) -> list[str]:
        return ["100.64.0.1:6270", "100.64.0.2:6270", "100.64.0.3:6270", "100.64.0.7:6270"]

    assert _decide(tmp_path, 7, [peer(1), peer(2), peer(3)], join=join)[-1] == "100.64.0.7:6270"


def test_follow_only_never_bootstraps(tmp_path: Path) -> None:
    with pytest.raises(JoinError, match="follow-only"):
        _decide(tmp_path, 1, [peer(2), peer(3)], follow_only=True)


def test_a_recorded_configuration_wins_and_is_checked(tmp_path: Path) -> None:
    write_members(str(tmp_path), ["100.64.0.1:6270", "100.64.0.5:6270"])
    assert read_members(str(tmp_path)) == ["100.64.0.1:6270", "100.64.0.5:6270"]
    assert _decide(tmp_path, 1, []) == ["100.64.0.1:6270", "100.64.0.5:6270"]
    with pytest.raises(JoinError, match="belongs to another node"):
        _decide(tmp_path, 2, [])
