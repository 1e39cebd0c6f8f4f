"""The driver's status view: what makes it stale at once, and what may wait for a tick.

Pure cores from :mod:`tests.raft_net`; no sockets, no clocks beyond the view's own.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.raft_net import Net
from tsconsensus.raft import MembershipChange, MembershipOp, Role
from tsconsensus.raft.driver_view import DriverView, ViewPublisher
from tsconsensus.raft.leader_silence import LeaderSilence


def _publisher(
    net: Net,
    member: int,
    seen: list[DriverView],
    storage: Callable[[], tuple[bool, str]] = lambda: (False, ""),
) -> ViewPublisher:
    return ViewPublisher(
        net.core(member),
        applied=lambda: net.core(member).commit,
        silence=LeaderSilence(1.0),
        tick_s=0.1,
        storage=storage,
        on_view=seen.append,
    )


def test_indexes_moving_leave_the_view_for_the_tick_and_a_publish_shows_them() -> None:
    net = Net(3)
    net.elect(1)
    seen: list[DriverView] = []
    views = {m: _publisher(net, m, seen) for m in (1, 2)}
    before = {m: views[m].view.commit for m in (1, 2)}
    for i in range(3):
        net.propose(1, b"x%d" % i)
    for m in (1, 2):
        assert net.core(m).commit == before[m] + 3
        assert not views[m].stale(), m  # only indexes moved
        assert views[m].view.commit == before[m]
        views[m].publish()
        assert views[m].view.commit == net.core(m).commit
        assert views[m].view.last_index == net.core(m).log.last_index
    assert [v.member_id for v in seen] == [1, 2]


def test_a_new_leader_a_new_term_or_a_membership_change_make_the_view_stale() -> None:
    net = Net(3)
    net.elect(1)
    seen: list[DriverView] = []
    follower = _publisher(net, 2, seen)
    assert follower.view.role is Role.FOLLOWER and follower.view.leader == 1
    net.elect(3)
    assert follower.stale()  # another leader, in a higher term
    follower.publish()
    assert not follower.stale() and follower.view.leader == 3

    leader = _publisher(net, 3, seen)
    net.core(3).propose_membership(MembershipChange(MembershipOp.ADD_LEARNER, 9, "n9"))
    net.settle()
    assert leader.stale()  # the configuration in force changed
    leader.publish()
    assert not leader.stale()
    assert 9 in {p.id for p in leader.view.peers}


def test_a_change_in_the_storage_state_makes_the_view_stale() -> None:
    net = Net(3)
    net.elect(1)
    state = [(False, "")]
    views = _publisher(net, 2, [], storage=lambda: state[0])
    state[0] = (True, "disk full: no space left")
    assert views.stale()
    views.publish()
    assert not views.stale() and views.view.disk_full
    state[0] = (False, "")  # space is back: readiness must not wait for a tick
    assert views.stale()
