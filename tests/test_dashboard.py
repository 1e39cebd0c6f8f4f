"""``tsc status --watch`` as an operator sees it: a real 3-node cluster under a steady load, the
dashboard in an 80x40 pseudo-terminal, the leader killed. Every screen read is parsed row by
row: a row that wrapped (or any line the dashboard does not draw) fails the layout check."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pexpect
from pexpect.popen_spawn import PopenSpawn

from tsconsensus import TsconsensusError
from tsconsensus.testing import LocalCluster

from .conftest import FAST_RAFT
from .helpers import eventually
from .terminal import TSC, Terminal

Make = Callable[..., LocalCluster]

HEADER = re.compile(r"^\d\d:\d\d:\d\d  asking \S+ \(\S+\) every [\d.]+s  Ctrl-C quits$")
TITLE = re.compile(
    r"^(?:leader (?P<leader>[0-9a-f]{16})  term (?P<term>\d+)  for (?P<at_least>≥ )?"
    r"(?P<led>\d+[smh][\dms]*)|NO SINGLE LEADER \(.*\))$"
)
COLUMNS = re.compile(r"^node\s+state\s+term\s+commit\s+applied\s+lag\s+conn\s+contact$")
RULE = re.compile(r"^─+$")
MEMBER = re.compile(
    r"^(?P<id>[0-9a-f]{8}) (?P<address>[\d.]+)\s+(?:(?P<state>★ leader|follower|candidate)"
    r"\s+\d+\s+\d+\s+\d+\s+(?:\d+|-)\s+(?:yes|no|-)\s+(?:[\d.]+s|-)|(?P<down>unreachable))$"
)
RATES = re.compile(
    r"^commands/s\s+(?P<rate>[\d.]+|-)\s+p99\s+(?P<p99>[\d.]+ m?s|> 5 s|-)\s+"
    r"commits/s\s+(?:[\d.]+|-)\s+\(last [\d.]+s\)$"
)
SPARK = re.compile(r"^commits/s [▁▂▃▄▅▆▇█ ]* max [\d.]+/s$")
EVENT = re.compile(r"^\d\d:\d\d:\d\d (?P<text>\S.*)$")


@dataclass
class Frame:
    leader: str | None
    leader_exact: bool
    members: dict[str, str]  # short id -> state ("unreachable" for a silent one)
    rate: float | None
    p99: str
    events: list[str]


def parse(lines: list[str], width: int = 80) -> Frame:
    """One dashboard screen, every row accounted for (AssertionError naming the first that is
    not what the dashboard draws)."""
    rows = [line for line in lines if line.strip()]
    assert all(len(line) <= width for line in rows)
    assert rows and HEADER.match(rows[0]), f"header row: {rows[:1]}"
    title = TITLE.match(rows[1])
    assert title, f"title row: {rows[1]!r}"
    assert COLUMNS.match(rows[2]), f"column names on one row: {rows[2]!r}"
    assert RULE.match(rows[3]), f"rule under the column names: {rows[3]!r}"
    members: dict[str, str] = {}
    at = 4
    while (member := MEMBER.match(rows[at])) is not None:
        members[member["id"]] = member["state"] or member["down"]
        at += 1
    rates = RATES.match(rows[at])
    assert rates, f"rates row (or a member row that wrapped): {rows[at]!r}"
    assert SPARK.match(rows[at + 1]), f"sparkline row: {rows[at + 1]!r}"
    assert rows[at + 2] == "recent events", f"events heading: {rows[at + 2]!r}"
    events = []
    for row in rows[at + 3 :]:
        event = EVENT.match(row)
        assert event, f"an event row (or one that wrapped): {row!r}"
        events.append(event["text"])
    return Frame(
        leader=title["leader"],
        leader_exact=title["leader"] is not None and not title["at_least"],
        members=members,
        rate=None if rates["rate"] == "-" else float(rates["rate"]),
        p99=rates["p99"],
        events=events,
    )


class Load:
    """One client setting keys through a node, as fast as it gets answers, in a thread."""

    def __init__(self, cluster: LocalCluster, node: int) -> None:
        self.done: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cluster, node), daemon=True)
        self._thread.start()

    def _run(self, cluster: LocalCluster, node: int) -> None:
        with cluster.client(node, timeout=5) as client:
            while not self._stop.is_set():
                try:
                    client.execute("set", {f"k{len(self.done) % 50}": len(self.done)}, timeout=2)
                    self.done.append(time.monotonic())
                except TsconsensusError:
                    continue  # no leader for a moment: the node waited up to the timeout

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_dashboard_shows_an_election_and_recovering_rates_at_80_columns(make_cluster: Make) -> None:
    cluster = make_cluster(3)
    old = cluster.wait_for_leader()
    watched = next(i for i in range(3) if i != old)
    ids = [cluster.node_id(i) for i in range(3)]
    short = [node_id[:8] for node_id in ids]
    load = Load(cluster, watched)
    window = 2.0
    argv = [*TSC, "status", "--watch", "--config", str(cluster.config_path(watched))]
    term = Terminal([*argv, "--interval", "0.5", "--window", str(window)], rows=40, cols=80)
    frames: list[Frame] = []

    def frame() -> Frame:
        frames.append(parse(term.lines()))
        return frames[-1]

    try:
        steady = eventually(
            lambda: (f := frame()).leader == ids[old] and (f.rate or 0) > 0 and f,
            30,
            what="the dashboard with the leader and commands flowing",
        )
        assert sorted(steady.members) == sorted(short)
        assert steady.members[short[old]] == "★ leader"
        assert steady.p99 != "-"
        assert any(e.startswith("watching 3 members") for e in steady.events)

        cluster.stop_node(old, kill=True)
        killed = time.monotonic()
        elected = eventually(
            lambda: (
                (f := frame()).leader not in (None, ids[old])
                and f.members[short[old]] == "unreachable"
                and any(e.startswith("election: ") for e in f.events)
                and f
            ),
            30,
            what="the election in the event list and the dead leader unreachable",
        )
        new = ids.index(elected.leader or "")
        election = next(e for e in elected.events if e.startswith("election: "))
        assert election.startswith(f"election: {short[new]} leads, term "), election
        assert f"(was {short[old]})" in election
        assert f"{short[old]} does not answer" in elected.events

        # rates recover: a window holding only commands after the kill still shows some
        recovered = eventually(
            lambda: (
                time.monotonic() > killed + window + 1.0
                and (f := frame()).rate is not None
                and f.rate > 0
                and f.p99 != "-"
                and f
            ),
            30,
            what="commands/s above zero again",
        )
        assert recovered.leader == elected.leader and recovered.leader_exact
        assert any(t > killed + window for t in load.done), "the load itself recovered"
        assert len(frames) >= 5  # every one of them parsed: no wrapped row, no stray line
    finally:
        load.stop()
        status = term.interrupt() if term.child.isalive() else None
        term.close()
    assert status == 0
    tail = bytes(term.output[-400:])
    assert b"\x1b[?1049l" in tail and b"\x1b[?25h" in tail  # main screen back, cursor shown
    assert b"Traceback" not in term.output


def _spawn_piped(*args: str) -> PopenSpawn:
    """``tsc ARGS`` with its output in a pipe, not a terminal."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return PopenSpawn([*TSC, *args], timeout=20, encoding="utf-8", env=env)


def _interrupt(child: PopenSpawn) -> int | None:
    child.kill(signal.SIGINT)
    child.expect(pexpect.EOF)
    return child.wait()


def test_watch_json_is_one_object_per_line_and_refresh(make_cluster: Make) -> None:
    cluster = make_cluster(3, raft_overrides={**FAST_RAFT, "compaction_min_entries": 20})
    for n in range(30):
        cluster.execute(n % 3, "set", {f"k{n}": n})
    with cluster.monitor(0) as monitor:
        snapshot_index = eventually(
            lambda: monitor.status()["snapshot_index"], 20, what="node1 to take a snapshot"
        )
        assert monitor.metrics()["tsc_raft_snapshot_index"] >= snapshot_index >= 20
    ids = sorted(cluster.node_id(i) for i in range(3))
    config = str(cluster.config_path(0))
    child = _spawn_piped("status", "--watch", "--json", "--interval", "0.3", "--config", config)
    try:
        refreshes = [json.loads(child.readline()) for _ in range(3)]
    finally:
        status = _interrupt(child)
    assert status == 0
    first, _, third = refreshes
    assert [e["kind"] for e in first["events"]] == ["watching"]
    assert third["events"] == []  # only what is new at each refresh
    assert first["time"] < third["time"]
    for refresh in refreshes:
        assert refresh["healthy"] and refresh["leader"] in ids
        assert sorted(n["id"] for n in refresh["nodes"]) == ids
        assert all("metrics" not in n for n in refresh["nodes"])
    assert max(n["snapshot_index"] for n in third["nodes"]) >= snapshot_index
    assert first["rates"]["commands_per_s"] is None  # nothing to compare with yet
    assert third["rates"]["commands_per_s"] is not None
    assert third["rates"]["commits_per_s"] is not None


def test_watch_into_a_pipe_prints_frame_after_frame_without_screen_codes(
    make_cluster: Make,
) -> None:
    cluster = make_cluster(1)
    config = str(cluster.config_path(0))
    child = _spawn_piped("status", "--watch", "--interval", "0.3", "--config", config)
    try:
        child.expect_exact("recent events")
        child.expect_exact("recent events")
        seen = str(child.before)
    finally:
        status = _interrupt(child)
    assert status == 0
    assert "commands/s" in seen and "\x1b[?1049h" not in seen
