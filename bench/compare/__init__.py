"""tsconsensus, etcd and pysyncobj side by side, measured in one run on this machine.

    .venv/bin/python -m bench.compare [--quick] [--clients 1 16 64] [--seconds 5] [--rounds 3]
        [--kills 10] [--keys 100000] [--systems tsconsensus,etcd,pysyncobj]
        [--chart bench-compare.png] [--json FILE]

(run from the repository root, with the ``bench`` extra installed: ``pip install -e
'.[bench]'``; etcd from Debian's ``etcd-server`` package, skipped with a hint when absent).

Each system runs as 3 member processes on loopback addresses (127.x), state on the same disk,
with its own defaults; the clusters of all systems run at once and every measurement is taken
on each system in turn, so that the shared machine's changing load falls on all alike; then 5
members against 3, one system at a time, both clusters up and measured in alternation.
Modules, one concern each:

- ``systems/``: one adapter per system (start, stop, leader, kill, restart, client paths);
  ``pysyncobj_node`` and ``tsc_inproc`` are the member programs the adapters start;
- ``loadgen`` (the separate client process), ``httpwire`` (raw HTTP/1.1), ``payloads``
  (requests per client style), ``inproc`` (in-process callers);
- measurements: ``runner`` (the run, interleaved across systems), ``failover``, ``memory``;
- output: ``results`` (figures and rows), ``table``, ``chart``; ``stats``, ``procs``: helpers.
"""
