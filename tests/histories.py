"""Histories for the linearizability checker's tests: builders, generators, a reference."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from tsconsensus import Command, KeyValueMachine
from tsconsensus.kv import json_equal
from tsconsensus.testing import Operation
from tsconsensus.testing.history import ClientId
from tsconsensus.testing.linearizability.model import ABSENT


def done(
    client: ClientId, name: str, args: Any, start: float, end: float, result: Any
) -> Operation:
    return Operation(client, name, args, start, end, result)


def lost(
    client: ClientId, name: str, args: Any, start: float, end: float | None = None
) -> Operation:
    """An operation whose outcome the client never learnt (timeout, connection lost)."""
    return Operation(client, name, args, start, end, unknown=True)


def get(c: str, key: str, s: float, e: float, value: Any) -> Operation:
    return done(c, "get", {"key": key}, s, e, value)


def put(c: str, key: str, value: Any, s: float, e: float, previous: Any) -> Operation:
    return done(c, "set", {key: value}, s, e, {key: previous})


def cas(c: str, key: str, old: Any, new: Any, s: float, e: float, ok: bool, now: Any) -> Operation:
    args = {"key": key, "expected": old, "value": new}
    return done(c, "cas", args, s, e, {"ok": ok, "value": now})


def delete(c: str, key: str, s: float, e: float, existed: bool) -> Operation:
    return done(c, "delete", {"key": key}, s, e, existed)


def pathological(n: int = 22) -> list[Operation]:
    """All concurrent: unknown writes of 1..n, reads of each, and a read nothing explains.

    Any order of the reads is possible, so the search meets 2**n sets of them before it can
    conclude that the last read, of a value written only after it returned, fits in none.
    """
    ops = [lost(f"w{i}", "set", {"k": i}, 0) for i in range(1, n + 1)]
    ops += [get(f"r{i}", "k", 0, 100, i) for i in range(1, n + 1)]
    return [*ops, get("z", "k", 0, 100, "late"), lost("l", "set", {"k": "late"}, 200)]


def generated_history(
    rng: random.Random,
    n: int,
    keys: int,
    clients: int,
    unknown_rate: float = 0.0,
    unique: bool = False,
) -> list[Operation]:
    """A history of a real sequential execution, given concurrency windows around it.

    Operation i takes effect at instant i on a real :class:`KeyValueMachine`; its client called
    it at some time after that client's previous return and got the answer before the client's
    next call, so every interval contains its linearization point. Some outcomes are made
    unknown; some unknown operations never took effect at all. Values written are small integers
    (many repeats), or with ``unique`` each write's own number, as a fault runner would choose.
    """
    written: dict[str, list[int]] = {}
    plans: list[tuple[int, str, Any]] = []  # (client, op, args), operation i at instant i
    for i in range(n):
        key = f"k{rng.randrange(keys)}"
        name = rng.choice(["get", "get", "set", "cas", "delete"])
        value = i if unique else rng.randrange(4)
        if name in ("set", "cas"):
            written.setdefault(key, []).append(value)
        expected = rng.choice([None, *written.get(key, [0, 1, 2, 3])[-3:]])
        args: Any = {
            "get": {"key": key},
            "delete": {"key": key},
            "set": {key: value},
            "cas": {"key": key, "expected": expected, "value": value},
        }[name]
        plans.append((rng.randrange(clients), name, args))
    times: list[tuple[float, float]] = [(0.0, 0.0)] * n
    last: dict[int, tuple[int, float]] = {}  # client -> (its previous instant, its return)
    for i, (client, _, _) in enumerate(plans):
        previous, free = last.get(client, (-1, -1.0))
        if previous >= 0:
            # the previous op returns before this one is called, both around their instants
            end = previous + rng.random() * (i - previous)
            times[previous] = (times[previous][0], end)
            free = end
        times[i] = (i - rng.random() * (i - free), i + 3 * rng.random())
        last[client] = (i, times[i][0])
    machine = KeyValueMachine()
    history = []
    for (client_number, name, args), (start, end) in zip(plans, times, strict=True):
        name_of_client = f"c{client_number}"
        if rng.random() < unknown_rate / 3:  # never took effect
            history.append(lost(name_of_client, name, args, start))
            continue
        result = machine.apply(Command(name, args))
        if rng.random() < unknown_rate:
            history.append(lost(name_of_client, name, args, start, end))
        else:
            history.append(done(name_of_client, name, args, start, end, result))
    rng.shuffle(history)
    return history


def reference(ops: Sequence[Operation], initial: Any) -> bool:
    """Linearizability by exhaustive search over (operations taken, key state), on the real machine.

    An operation may go next once every operation that returned before its call has gone; one
    with an unknown outcome may also never go. ``initial`` is the key's starting value, or
    ``ABSENT``. Exponential, and obviously right.
    """
    must_follow = [
        sum(
            1 << j
            for j, b in enumerate(ops)
            if not b.unknown and b.end is not None and b.end < a.start
        )
        for a in ops
    ]
    known = sum(1 << i for i, op in enumerate(ops) if not op.unknown)
    start = b"{}" if initial is ABSENT else json.dumps({"k": initial}).encode()
    seen: set[tuple[int, bytes]] = set()
    todo = [(0, start)]
    while todo:
        taken, snapshot = todo.pop()
        if taken & known == known:
            return True
        for i, op in enumerate(ops):
            if taken >> i & 1 or must_follow[i] & ~taken:
                continue
            machine = KeyValueMachine()
            machine.restore(snapshot)
            result = machine.apply(Command(op.op, op.args))
            if not op.unknown and not json_equal(result, op.result):
                continue
            after = (taken | 1 << i, machine.snapshot())
            if after not in seen:
                seen.add(after)
                todo.append(after)
    return False
