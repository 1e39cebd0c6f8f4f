"""A fault run: a real cluster, concurrent clients, a nemesis, then the proof.

:func:`run` starts an N-node :class:`~tsconsensus.testing.LocalCluster` (real node processes
with state directories), drives clients against its command ports while the nemesis injects
faults, heals everything, reads every key once more, and judges: the history is linearizable,
every live replica has the same state, every process the run started is gone. Every phase has
a deadline.

Where a network namespace can be made (root, iproute2, nftables), the whole run happens inside
one made for it: the nodes, the clients and the firewall rules that make partitions. Elsewhere
it runs on a loopback base address of its own, without partitions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import TsconsensusError
from ..cluster import LocalCluster
from ..history import Operation, write_history
from ..netns import RunNamespace, nftables_available
from .clients import Caller, Client, Workload, final_reads, run_clock
from .control import ClusterControl, Observer, wait_until
from .nemesis import Nemesis
from .options import RunOptions
from .replicas import converge
from .report import Judgement, RunReport, RunVerdict, judge

log = logging.getLogger("tsconsensus.testing.faults")


@dataclass
class _Run:
    options: RunOptions
    seed: int
    nemeses: tuple[str, ...]
    directory: Path
    control: ClusterControl
    namespace: RunNamespace | None
    abort: threading.Event = field(default_factory=threading.Event)
    report: RunReport | None = None
    interrupted: bool = False


def run(options: RunOptions) -> RunReport:
    """Make one fault run and return its report (``report.exit_code``: 0 pass, 1 violation
    or problem, 2 could not run or undecided). Raises ValueError for bad options only."""
    options.validate()
    began = time.monotonic()
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
    nemeses = tuple(options.nemeses)
    notes = []
    why_not = nftables_available() if options.namespace else "--no-netns"
    if why_not is not None and "partition" in nemeses:
        notes.append(f"no partitions: {why_not}")
        nemeses = tuple(k for k in nemeses if k != "partition")
    notes += options.plant_notes(nemeses)
    if options.power_loss:
        notes.append("power-loss mode: nodes run with TSC_POWER_LOSS=1 (the engine's storage)")
    directory = options.directory or Path(tempfile.mkdtemp(prefix="tsc-faults-"))
    base = (
        "127.0.1.1"
        if why_not is None
        else f"127.{random.randint(2, 250)}.{random.randint(0, 250)}.1"
    )
    cluster = LocalCluster(
        directory / "cluster",
        nodes=options.nodes,
        base_address=base,
        raft_overrides=dict(options.raft),
        state_machine=options.state_machine,
    )
    log.info("fault run: seed %d, files in %s", seed, directory)
    try:
        with RunNamespace() if why_not is None else contextlib.nullcontext() as namespace:
            if namespace is not None and "partition" in nemeses:
                try:  # the binary may be there and the kernel's nf_tables not
                    namespace.heal()
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                    detail = getattr(exc, "stderr", b"") or b""
                    notes.append(f"no partitions: nft failed: {detail.decode(errors='replace')}")
                    nemeses = tuple(k for k in nemeses if k != "partition")
            control = ClusterControl(cluster, env=options.env(), namespace=namespace)
            ctx = _Run(options, seed, nemeses, directory, control, namespace)
            _in_thread(ctx)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # setting up the namespace, or a bug of the runner's own
        log.exception("the fault run failed")
        ctx_report = _report(
            options, seed, nemeses, Judgement(RunVerdict.COULD_NOT_RUN, None, (), repr(exc))
        )
        ctx_report.notes += notes
        return ctx_report
    report = ctx.report
    if report is None:  # the run's thread died before it could report: a bug, said so
        report = _report(
            options,
            seed,
            nemeses,
            Judgement(RunVerdict.COULD_NOT_RUN, None, (), "the run ended without a report"),
        )
    if ctx.interrupted:
        notes.append("interrupted (Ctrl-C): the workload was cut short")
    report.notes[:0] = notes
    report.directory = directory
    report.elapsed_s = time.monotonic() - began
    if report.exit_code == 0 and options.directory is None and not options.keep:
        shutil.rmtree(directory, ignore_errors=True)
        report.directory = None
        if report.history_path is not None and report.history_path.is_relative_to(directory):
            report.history_path = None
    return report


def _bound(options: RunOptions) -> float:
    """How long a whole run may take before it is abandoned."""
    return options.duration_s + 6 * options.recover_timeout_s + options.check_timeout_s + 120


def _in_thread(ctx: _Run) -> None:
    """Run :func:`_inside` on a thread of its own (which enters the namespace, if any: this
    thread stays out), within the run's time bound; Ctrl-C cuts the workload short, and the
    run still heals, checks and stops its nodes."""
    done = threading.Event()

    def body() -> None:
        try:
            _inside(ctx)
        finally:
            done.set()

    # Waiting on an event, not on join(): a join interrupted by Ctrl-C can report the thread
    # dead while it still runs (Python before 3.12), and the nodes would be left behind.
    threading.Thread(target=body, name="faults-run", daemon=True).start()
    deadline = time.monotonic() + _bound(ctx.options)
    try:
        try:
            while not done.wait(0.5) and time.monotonic() < deadline:
                pass
        except KeyboardInterrupt:
            log.warning("interrupted: healing, checking what was recorded, stopping the nodes")
            ctx.abort.set()
            ctx.interrupted = True
            done.wait(_bound(ctx.options) - ctx.options.duration_s)
    except BaseException:
        # anything else (a second Ctrl-C, a test's timeout): no time to heal; no node left
        ctx.abort.set()
        ctx.control.close()
        _kill_leftovers(ctx.control)
        raise
    if not done.is_set():
        ctx.control.close()
        _kill_leftovers(ctx.control)
        ctx.report = _report(
            ctx.options,
            ctx.seed,
            ctx.nemeses,
            Judgement(RunVerdict.COULD_NOT_RUN, None, (), "the run did not finish in time"),
        )


def _kill_leftovers(control: ClusterControl) -> list[int]:
    left = control.leftover()
    for pid in left:  # ours: process_alive checked its command line names our directory
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def _report(
    options: RunOptions, seed: int, nemeses: tuple[str, ...], judgement: Judgement
) -> RunReport:
    return RunReport(
        seed=seed,
        command=options.command(seed),
        nodes=options.nodes,
        duration_s=options.duration_s,
        nemeses=nemeses,
        judgement=judgement,
        clients=options.clients,
    )


def _inside(ctx: _Run) -> None:
    if ctx.namespace is not None:
        ctx.namespace.enter()
    options, control = ctx.options, ctx.control
    clock = run_clock()
    problems: list[str] = []
    could_not_run: str | None = None
    callers: list[Caller] = []
    workload = Workload(options.client.keys, options.client.ops_per_key)
    observer_stop = threading.Event()
    observer = Observer(control, observer_stop)
    nemesis: Nemesis | None = None
    replicas: dict[str, tuple[int, str]] = {}
    try:
        try:
            control.start_all(options.recover_timeout_s)
        except TsconsensusError as exc:
            could_not_run = f"the cluster did not start: {exc}"
            return
        observer.start()
        callers, nemesis = _workload_phase(ctx, clock, workload, problems)
        problems += nemesis.problems if nemesis is not None else []
        replicas = _final_phase(ctx, clock, workload, callers, problems)
    except Exception as exc:
        log.exception("the fault run failed")
        could_not_run = f"the runner failed: {exc!r}"
    finally:
        observer_stop.set()
        if observer.is_alive():
            observer.join(5)
        control.stop_all()
        if not wait_until(lambda: not control.leftover(), 10):
            left = _kill_leftovers(control)
            problems.append(f"process(es) still running after the nodes were stopped: {left}")
        operations = sorted(
            (op for caller in callers for op in caller.operations), key=lambda op: op.start
        )
        history_path = _write_history(ctx, operations)
        judgement = judge(
            operations,
            problems,
            could_not_run=could_not_run,
            check_timeout_s=options.check_timeout_s,
        )
        report = _report(options, ctx.seed, ctx.nemeses, judgement)
        report.counts = sum((c.counts for c in callers), Counter())
        report.cas_applied = sum(
            1
            for op in operations
            if op.op == "cas"
            and not op.unknown
            and isinstance(op.result, dict)
            and op.result.get("ok")
        )
        report.keys = len(workload.keys_used())
        report.faults = nemesis.counts if nemesis is not None else Counter()
        report.partition_shapes = nemesis.shapes if nemesis is not None else Counter()
        report.terms = observer.summary()
        report.replicas = replicas
        report.pids_started = len(control.pids)
        report.leftover_pids = tuple(control.leftover())
        report.history_path = history_path
        ctx.report = report


def _workload_phase(
    ctx: _Run, clock: Callable[[], float], workload: Workload, problems: list[str]
) -> tuple[list[Caller], Nemesis | None]:
    options, control = ctx.options, ctx.control
    stop_clients = threading.Event()
    stop_nemesis = threading.Event()
    run_id = f"r{ctx.seed}"
    callers = [
        Caller(
            f"c{n + 1}",
            control.cluster,
            options.client,
            random.Random(f"{ctx.seed}/c{n + 1}"),
            clock,
            stop_clients,
            run_id,
            home=n,
        )
        for n in range(options.clients)
    ]
    clients = [Client(caller, workload) for caller in callers]
    nemesis = (
        Nemesis(control, ctx.nemeses, ctx.seed, stop_nemesis, clock, options.nemesis)
        if ctx.nemeses
        else None
    )
    for client in clients:
        client.start()
    if nemesis is not None:
        nemesis.start()
    ctx.abort.wait(options.duration_s)
    stop_nemesis.set()
    if nemesis is not None:
        nemesis.join(options.nemesis.hold_s[1] + 2 * options.nemesis.recover_timeout_s + 30)
        if nemesis.is_alive():
            problems.append("the nemesis did not stop in time")
    stop_clients.set()
    settings = options.client
    for client in clients:
        client.join(settings.op_deadline_s + settings.http_timeout_s + 10)
        if client.is_alive():
            problems.append(f"client {client.caller.name} did not stop in time")
    return callers, nemesis


def _final_phase(
    ctx: _Run,
    clock: Callable[[], float],
    workload: Workload,
    callers: list[Caller],
    problems: list[str],
) -> dict[str, tuple[int, str]]:
    """Heal, wait for the cluster, read every key, compare the replicas."""
    options, control = ctx.options, ctx.control
    timeout = options.recover_timeout_s
    for i in control.exited():
        problems.append(f"{control.name(i)} exited by itself; its log ends:\n{control.log_tail(i)}")
        control.kill(i)
    control.heal_all()
    for i in control.removed():
        # removed and wiped, it joins again on its own once started: give it the time to
        if wait_until(lambda i=i: control.is_member(i), timeout, 0.3):  # type: ignore[misc]
            control.rejoined(i)
        else:
            problems.append(f"{control.name(i)} did not join again within {timeout:g}s")
    members = [i for i in range(control.size) if i not in control.removed()]
    late = control.wait_ready(members, timeout)
    if late:
        names = " ".join(control.name(i) for i in late)
        problems.append(f"not ready within {timeout:g}s after healing: {names}")
    leader = control.leader()
    final = Caller(
        "final",
        control.cluster,
        options.client,
        random.Random(f"{ctx.seed}/final"),
        clock,
        threading.Event(),
        f"r{ctx.seed}",
        home=leader or 0,
    )
    callers.append(final)
    missing = final_reads(final, workload.keys_used(), clock() + timeout)
    final.close()
    if missing:
        problems.append(
            f"no read was answered after healing for {len(missing)} key(s): {missing[:5]}"
        )
    replicas, issue = converge(
        control, [i for i in members if i not in late], timeout, ctx.directory / "snapshots"
    )
    if issue:
        problems.append(issue)
    return replicas


def _write_history(ctx: _Run, operations: list[Operation]) -> Path | None:
    """Always into the run's directory (kept when the run fails); also where asked."""
    own = ctx.directory / "history.jsonl"
    try:
        write_history(own, operations)
        if ctx.options.history is not None:
            write_history(ctx.options.history, operations)
            return ctx.options.history
    except OSError as exc:
        log.error("could not write the history: %s", exc)
        return None
    return own
