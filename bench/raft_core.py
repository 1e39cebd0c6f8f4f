"""CPU of the pure Raft core per command, leader and follower (prints figures; not a test).

Three cores in this process, no IO: a command at a time, as one caller drives a cluster. The
leader proposes, hands out its Ready (and the one after it, as the driver does after a
write), each follower steps the append and answers, the leader steps both answers. Only the
time spent inside the cores' methods is counted, so the figure is the core's share of a
command, without codec, transport, storage or asyncio.

    .venv/bin/python bench/raft_core.py [--commands 20000] [--rounds 5]

Figures are medians over rounds; compare two trees by running this in each, in alternation.
"""

from __future__ import annotations

import argparse
import statistics
import time
from random import Random

from tsconsensus.raft import CoreConfig, Message, RaftCore, bootstrap_state

_CLUSTER = 0xC1


def _handle(core: RaftCore) -> list[Message]:
    """One Ready, made durable at once; the messages it sends."""
    rd = core.ready()
    if not rd:
        return []
    core.advance(rd)
    return [*rd.messages, *rd.messages_after_persist]


def _cluster() -> tuple[RaftCore, list[RaftCore]]:
    initial = bootstrap_state({i: f"n{i}" for i in (1, 2, 3)})
    cores = {
        i: RaftCore(
            CoreConfig(id=i, cluster_id=_CLUSTER, election_ticks_min=10, election_ticks_max=20),
            initial,
            Random(i),
        )
        for i in (1, 2, 3)
    }
    for _ in range(200):  # until a leader is elected and every follower has its entries
        for core in cores.values():
            core.tick()
        moving = [m for core in cores.values() for m in _handle(core)]
        while moving:
            for m in moving:
                cores[m.to].step(m)
            moving = [m for core in cores.values() for m in _handle(core)]
        leaders = [c for c in cores.values() if c.is_leader]
        if leaders and all(c.commit == leaders[0].commit for c in cores.values()):
            return leaders[0], [c for c in cores.values() if not c.is_leader]
    raise RuntimeError("no leader emerged")


def measure(commands: int) -> tuple[float, float]:
    """Seconds of core time per command: the leader's, one follower's."""
    leader, followers = _cluster()
    clock = time.perf_counter
    in_leader = in_followers = 0.0
    for _ in range(commands):
        t = clock()
        leader.propose(b"x" * 60)
        sent = _handle(leader) + _handle(leader)
        in_leader += clock() - t
        answers: list[Message] = []
        for f in followers:
            t = clock()
            for m in sent:
                if m.to == f.id:
                    f.step(m)
            answers += _handle(f) + _handle(f)
            in_followers += clock() - t
        t = clock()
        for m in answers:
            leader.step(m)
            _handle(leader)
            _handle(leader)
        in_leader += clock() - t
    return in_leader / commands, in_followers / commands / len(followers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=20000, help="commands per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds = [measure(args.commands) for _ in range(args.rounds)]
    for label, k in (("leader", 0), ("follower", 1)):
        values = [r[k] * 1e6 for r in rounds]
        shown = ", ".join(f"{v:.1f}" for v in values)
        median = statistics.median(values)
        print(f"core CPU per command, {label:8}  median {median:6.1f} µs  ({shown})")


if __name__ == "__main__":
    main()
