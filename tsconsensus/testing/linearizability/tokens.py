"""Unknown-outcome operations ("tokens") for the search: indexed by what they lead to.

A token may take effect once, at any time after its call, or never. The search spends tokens only
in chains right before a known operation whose result needs them (see :mod:`.search`), so what it
asks of this index is: which unspent tokens, called by now, lead to a given state.

Liveness: a ``set`` or ``delete`` token matters only while some known operation not yet
linearized observes the value it writes (an unknown ``cas`` expecting it keeps it alive for good,
as a chain may lead through it).
Past that, a ``delete`` token is useless and a ``set`` token can only make the key present for a
``delete`` that found it, where any such token will do. The search uses this to compare
configurations by the live tokens they spent and the number of dead ones, instead of by exactly
which tokens, and to spend a dead token rather than a live one whenever either would do.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from .model import ABSENT, ANYTHING, NULLISH, KeyOp, Kind

PRESENT = "\0present"
"""Target meaning "any present value" (what ``delete`` answering true needs)."""
_NULL = "null"


class Token:
    __slots__ = ("bit", "op", "seq")

    def __init__(self, op: KeyOp, bit: int, seq: int) -> None:
        self.op = op
        self.bit = bit
        self.seq = seq


Group = list[Token]
"""Tokens with one effect, in call order: interchangeable once called."""


def covers(state: str, target: str) -> bool:
    """Whether ``target`` is one of the concrete states ``state`` stands for."""
    if state in (target, ANYTHING):
        return True
    return state == NULLISH and target in (ABSENT, _NULL)


def targets(op: KeyOp) -> tuple[str, ...]:
    """The states from which ``op`` (known outcome) is explained: the states it observes.

    ``PRESENT`` stands for every present value. The model still has the last word on each.
    """
    kind = op.kind
    if kind is Kind.DELETE:
        return (PRESENT,) if op.flag else (ABSENT,)
    if kind is Kind.CAS and op.flag:
        return (op.expected,)
    seen = op.observed
    if seen == _NULL:
        return (_NULL,) if kind is Kind.CAS and op.expected == ABSENT else (ABSENT, _NULL)
    return () if kind is Kind.CAS and seen == op.expected else (seen,)


class TokenIndex:
    """The tokens of one key's history, and which of them are live as the search goes.

    ``observe``/``unobserve`` follow the search as it linearizes and un-linearizes known ops;
    ``keep_mask`` (live ``set``/``delete`` tokens, and every ``cas`` token) and ``dead_sets``
    (``set`` tokens whose value nobody left observes) then depend only on which known ops are
    linearized.
    """

    def __init__(self, tokens: Sequence[Token], known: Sequence[KeyOp]) -> None:
        self.sets: dict[str, Group] = {}  # by value written
        self.deletes: Group = []
        self.cas_to: dict[str, dict[str, Group]] = {}  # by value written, then expected
        self.cas_from: dict[str, dict[str, Group]] = {}  # by expected, then value written
        self.by_bit = {token.bit: token for token in tokens}
        self._seqs = [token.seq for token in tokens]  # tokens come in call order
        self._called = [0]  # _called[i]: the bits of the first i tokens
        self.pinned: set[str] = set()  # values some unknown cas expects: chains may need them
        self._writers: dict[str, int] = {}  # value -> set/delete tokens writing it
        set_mask = 0
        for token in tokens:
            self._called.append(self._called[-1] | token.bit)
            op = token.op
            if op.kind is Kind.SET:
                self.sets.setdefault(op.value, []).append(token)
                self._writers[op.value] = self._writers.get(op.value, 0) | token.bit
                set_mask |= token.bit
            elif op.kind is Kind.DELETE:
                self.deletes.append(token)
                self._writers[ABSENT] = self._writers.get(ABSENT, 0) | token.bit
            elif op.kind is Kind.CAS:
                group = self.cas_to.setdefault(op.value, {}).setdefault(op.expected, [])
                group.append(token)
                self.cas_from.setdefault(op.expected, {})[op.value] = group
                self.pinned.add(op.expected)
        self._observers: dict[str, int] = {}
        for op in known:
            for value in targets(op):
                self._observers[value] = self._observers.get(value, 0) + 1
        self._set_mask = set_mask
        writes: dict[str, int] = {}
        for op in [*known, *(token.op for token in tokens)]:
            if op.kind in (Kind.SET, Kind.CAS):
                writes[op.value] = writes.get(op.value, 0) + 1
        self.identified = 0
        """Set and cas tokens whose value no other operation writes: who reads it, read them."""
        for token in tokens:
            if token.op.kind is not Kind.DELETE and writes[token.op.value] == 1:
                self.identified |= token.bit
        self.keep_mask = self._called[-1]
        self.dead_sets = 0
        for value, writers in self._writers.items():
            if self.dead(value):
                self._kill(writers)

    def dead(self, value: str) -> bool:
        """Whether nothing left can observe ``value`` (a token writing it explains nothing)."""
        return value not in self.pinned and not self._observers.get(value)

    def _kill(self, writers: int) -> None:
        self.keep_mask &= ~writers
        self.dead_sets |= writers & self._set_mask

    def observe(self, op: KeyOp) -> None:
        """``op`` was linearized: it no longer keeps the values it observes alive."""
        for value in targets(op):
            left = self._observers[value] - 1
            self._observers[value] = left
            if not left and value not in self.pinned:
                self._kill(self._writers.get(value, 0))

    def unobserve(self, op: KeyOp) -> None:
        """Undo :meth:`observe`."""
        for value in targets(op):
            left = self._observers[value]
            self._observers[value] = left + 1
            if not left and value not in self.pinned:
                writers = self._writers.get(value, 0)
                self.keep_mask |= writers
                self.dead_sets &= ~writers

    def called_before(self, frontier: int) -> int:
        """The bits of the tokens called before event ``frontier``."""
        return self._called[bisect_left(self._seqs, frontier)]
