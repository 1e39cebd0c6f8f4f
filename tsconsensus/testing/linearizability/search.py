"""Wing and Gong's linearizability search with Lowe's memoization, for one key's sub-history.

Operations with a known outcome form a doubly linked list of call and return events in time
order. The search walks it from the front: any call before the first remaining return may be
linearized now, if the model accepts it from the current state; its two events are then unlinked
and the search goes on from the new front. When no candidate works, the last choice is undone
(the unlinked events go back in place, as in dancing links) and the next one tried. Lowe's cache
remembers every configuration (known operations linearized, model state) explored, so none is
explored twice.

Operations with an unknown outcome ("tokens") may take effect at any time after their call, or
never. Linearizing them eagerly, as calls like any other, makes every subset of them a new
configuration. Instead a token is only ever spent in a chain right before a known operation whose
result needs it: a chain is at most one blind write (``set``/``delete``) followed by ``cas``
operations each enabled by the state before it. Any linearization can be rearranged that way
without changing a result: a token that nothing right after it needs can be left out, or moved
later, where it changes nothing anyone observed.

Up to three passes, each allowing at least what the next allows, so that a "not linearizable"
is final, and so is a "linearizable" whose linearization never spent a token twice:

- relaxed: tokens may be spent again and again, so a configuration is just (known set, state)
  and the search stays polynomial for bounded concurrency. Most violations are proved here, fast,
  however many tokens there are.
- semi: tokens whose value no other operation writes are spent at most once (a stale read of
  such a value, or an unknown write applied twice, is caught here); the others may be reused.
- exact: every token is spent at most once. The cache holds, per (known set, state), the tokens
  spent, and a configuration is skipped when an explored one spent a subset of them (whatever
  the larger set can still do, the smaller one can too). Tokens with the same effect are
  interchangeable once called, so only the earliest-called unspent one of each is offered; tokens
  nothing left can observe count only by number (see :mod:`.tokens`).

Reading a value that no operation writes is decided before any search.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Iterator, Sequence
from typing import Optional

from .model import ABSENT, KeyOp, Kind, step
from .tokens import PRESENT, Group, Token, TokenIndex, covers, targets

_NULL = "null"
_CLOCK_EVERY = 256
"""How many moves go between two looks at the clock (reading it costs more than a move)."""


class _Entry:
    __slots__ = ("bit", "call", "match", "next", "op", "prev", "seq")

    def __init__(self, op: KeyOp | None, bit: int, call: bool, seq: int) -> None:
        self.op = op
        self.bit = bit
        self.call = call
        self.seq = seq
        self.match: Optional[_Entry] = None
        self.prev: Optional[_Entry] = None
        self.next: Optional[_Entry] = None


def _build(ops: Sequence[KeyOp]) -> tuple[_Entry, TokenIndex]:
    """The event list of the known ops behind a sentinel head, and the token index.

    At equal times calls sort before returns: two operations that touch at one instant count as
    concurrent, the reading that never reports a violation the clock cannot prove.
    """
    events: list[tuple[float, int, int]] = []
    for position, op in enumerate(ops):
        if op.known or op.kind is not Kind.GET:  # an unknown read changes nothing
            events.append((op.start, 0, position))
        if op.known:
            events.append((op.end, 1, position))
    events.sort()
    head = _Entry(None, 0, False, -1)
    tokens: list[Token] = []
    calls: dict[int, _Entry] = {}
    last = head
    for seq, (_, is_return, position) in enumerate(events):
        op = ops[position]
        if not op.known:
            tokens.append(Token(op, 1 << position, seq))
            continue
        entry = _Entry(op, 1 << position, not is_return, seq)
        if is_return:
            call = calls[position]
            call.match = entry
            entry.match = call
        else:
            calls[position] = entry
        entry.prev = last
        last.next = entry
        last = entry
    return head, TokenIndex(tokens, [op for op in ops if op.known])


def _unlink(entry: _Entry) -> None:
    assert entry.prev is not None
    entry.prev.next = entry.next
    if entry.next is not None:
        entry.next.prev = entry.prev


def _relink(entry: _Entry) -> None:
    # entry still points at its old neighbours: undoing unlinks in reverse order restores them
    assert entry.prev is not None
    entry.prev.next = entry
    if entry.next is not None:
        entry.next.prev = entry


class Mode(enum.Enum):
    """How strictly the search holds tokens to taking effect once."""

    RELAXED = "every token may be spent again"
    SEMI = "tokens writing a value nobody else writes are spent once; the others may be again"
    EXACT = "every token is spent once"


class _Search:
    """One search over one key's operations; :meth:`run` answers once."""

    def __init__(self, ops: Sequence[KeyOp], mode: Mode, deadline: float) -> None:
        self.head, self.tokens = _build(ops)
        # relaxed configurations hold no tokens, so one chain per target is all it needs
        self.relaxed = mode is Mode.RELAXED
        self.reusable = {
            Mode.RELAXED: -1,  # every bit
            Mode.SEMI: ~self.tokens.identified,
            Mode.EXACT: 0,
        }[mode]
        self.deadline = deadline
        self.known_total = sum(1 for op in ops if op.known)
        self.reused = False

    def _first(self, group: Group | None, frontier: int, spent: int) -> Token | None:
        """The earliest-called token of ``group`` called before ``frontier``, unspent.

        Failing that, the earliest-called reusable one, spent again.
        """
        again = None
        for token in group or ():
            if token.seq >= frontier:
                break
            if not spent & token.bit:
                return token
            if again is None and self.reusable & token.bit:
                again = token
        return again

    def _chains(self, target: str, state: str, frontier: int, spent: int) -> Iterator[int]:
        """Token sets of the chains that lead from ``state`` to ``target`` (relaxed: one).

        Depth first from the end of the chain backwards, with an explicit stack: a chain of
        ``cas`` tokens can be as long as the history.
        """
        tokens = self.tokens
        if target == PRESENT:
            yield from self._presence(frontier, spent)
            return
        # (state the chain must reach, tokens of the links after it, states those links visit)
        stack: list[tuple[str, int, frozenset[str]]] = [(target, 0, frozenset())]
        while stack:
            wanted, later, visited = stack.pop()
            taken = spent | later
            token = self._first(
                tokens.deletes if wanted == ABSENT else tokens.sets.get(wanted), frontier, taken
            )
            if token is not None:
                yield token.bit | later
                if self.relaxed:
                    return
            for expected, group in tokens.cas_to.get(wanted, {}).items():
                if expected == wanted or expected in visited:
                    continue  # a chain through the same state twice has a useless loop in it
                token = self._first(group, frontier, taken)
                if token is None:
                    continue
                if covers(state, expected):
                    yield token.bit | later
                    if self.relaxed:
                        return
                    continue
                stack.append((expected, later | token.bit, visited | {wanted}))

    def _presence(self, frontier: int, spent: int) -> Iterator[int]:
        """Tokens that make an absent key present, for a ``delete`` that found it.

        Only the cheapest are offered: spending token A rather than B is as good whenever B can
        do everything A can later. A ``cas`` from absent writing a dead value is worth less than
        any other token usable now; a dead ``set`` token less than any live one.
        """
        tokens = self.tokens
        live: list[int] = []
        for value, group in tokens.cas_from.get(ABSENT, {}).items():
            token = self._first(group, frontier, spent)
            if token is None:
                continue
            if tokens.dead(value):
                yield token.bit
                return
            live.append(token.bit)
        called = tokens.called_before(frontier)
        dead = tokens.dead_sets & called
        unspent = dead & ~spent
        reusable = dead & self.reusable
        if unspent or reusable:
            choice = unspent or reusable
            yield choice & -choice  # any dead set token will do: take the lowest bit
            if self.relaxed:
                return
        else:
            for value, group in tokens.sets.items():
                token = self._first(group, frontier, spent)
                if token is not None and not tokens.dead(value):
                    yield token.bit
                    if self.relaxed:
                        return
        for bit in live:
            yield bit
            if self.relaxed:
                return

    def _moves(self, state: str, spent: int) -> Iterator[tuple[_Entry, str, int]]:
        """(call to linearize, state after it, tokens spent just before it), best first."""
        candidates = []
        entry = self.head.next
        while entry is not None and entry.call:
            candidates.append(entry)
            entry = entry.next
        # tokens called before the first pending return may be spent now
        frontier = entry.seq if entry is not None else 1 << 62
        for call in candidates:
            op = call.op
            assert op is not None
            after = step(state, op)
            if after is not None:
                yield call, after, 0
            for target in targets(op):
                if target != PRESENT and covers(state, target):
                    continue  # the direct move above already covers it
                if target == PRESENT and state != ABSENT:
                    continue  # any other state explains it directly, or rules it out
                after = ABSENT if target == PRESENT else step(target, op)
                if after is None:
                    continue
                for bits in self._chains(target, state, frontier, spent):
                    yield call, after, bits

    def run(self, initial: str) -> bool | None:
        """Search from ``initial``; ``None`` past the deadline.

        After a relaxed "linearizable", :attr:`reused` says whether the path found spent some
        token twice (when not, it is a linearization in the exact sense too).
        """
        self.reused = False
        if self.known_total == 0:
            return True
        tokens = self.tokens
        # (known ops linearized, state) -> (live tokens spent, number of dead ones spent) seen
        cache: dict[tuple[int, str], list[tuple[int, int]]] = {}
        moves = self._moves(initial, 0)
        Frame = tuple[_Entry, str, int, int, Iterator[tuple[_Entry, str, int]]]
        stack: list[Frame] = []
        state, known, spent, reuses, done = initial, 0, 0, 0, 0
        countdown = _CLOCK_EVERY
        while True:
            countdown -= 1
            if countdown == 0:
                countdown = _CLOCK_EVERY
                if time.monotonic() > self.deadline:
                    return None
            move = next(moves, None)
            if move is None:
                if not stack:
                    return False
                call, state, spent, reuses, moves = stack.pop()
                assert call.match is not None and call.op is not None
                tokens.unobserve(call.op)
                _relink(call.match)
                _relink(call)
                known &= ~call.bit
                done -= 1
                continue
            call, after, bits = move
            new_known, new_spent = known | call.bit, spent | bits
            assert call.op is not None
            tokens.observe(call.op)
            seen = cache.setdefault((new_known, after), [])
            if self.relaxed:
                # tokens are not part of a relaxed configuration: spent only labels the path
                fresh = not seen
                if fresh:
                    seen.append((0, 0))
            else:
                held = new_spent & ~self.reusable
                live = held & tokens.keep_mask
                dead = (held & tokens.dead_sets).bit_count()
                fresh = not any(
                    (old_live & ~live) == 0 and old_dead <= dead for old_live, old_dead in seen
                )
                if fresh:
                    seen.append((live, dead))
            if not fresh:
                tokens.unobserve(call.op)
                continue
            stack.append((call, state, spent, reuses, moves))
            assert call.match is not None
            _unlink(call)
            _unlink(call.match)
            if bits & spent:
                reuses += 1
            state, known, spent = after, new_known, new_spent
            done += 1
            if done == self.known_total:
                self.reused = reuses > 0
                return True
            moves = self._moves(state, spent)


def _observes_unwritten(ops: Sequence[KeyOp]) -> bool:
    """Whether a result shows a value no operation writes: unexplainable from an absent key.

    A shortcut, not an optimisation of the search: however many orders the search would try,
    none could explain such a result.
    """
    written = {op.value for op in ops if op.kind in (Kind.SET, Kind.CAS)}
    return any(
        target not in written and target not in (ABSENT, _NULL, PRESENT)
        for op in ops
        if op.known
        for target in targets(op)
    )


def is_linearizable(ops: Sequence[KeyOp], initial: str, deadline: float = math.inf) -> bool | None:
    """Whether one key's operations can be linearized from model state ``initial``.

    ``None`` when ``time.monotonic()`` passed ``deadline`` before an answer: not an answer.
    The operations' ``start``/``end`` give the real-time order; unknown-outcome operations are
    optional. Exhaustive, so exponential in the worst case; the cache keeps typical histories
    (bounded concurrency) close to linear.
    """
    if initial == ABSENT and _observes_unwritten(ops):
        return False
    for mode in Mode:
        search = _Search(ops, mode, deadline)
        answer = search.run(initial)
        # each mode allows at least what the next allows: its "no" is final, and so is a "yes"
        # whose linearization never spent a token twice
        if answer is not True or not search.reused:
            return answer
    return True
