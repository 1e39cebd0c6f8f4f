"""JSON from outside, decoded with a bound on nesting depth.

The standard decoder recurses once per level and raises ``RecursionError`` (a
``RuntimeError``, not a ``ValueError``) around a thousand levels, wherever the stack happens to
be; a value a few levels short of that decodes here but not on the Raft thread, and would
poison the log entry it rides in. So every JSON input (request bodies, ``--args``, node answers
read by clients, log entries built by :func:`tsconsensus._applier.encode_entry`) is held to
:data:`MAX_DEPTH` levels, and every failure is an :class:`InvalidJSONError`.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidJSONError

MAX_DEPTH = 100
"""Deepest nesting of arrays and objects accepted (``[]`` is 1, ``{"a": []}`` is 2)."""

# Encoders built once: json.dumps with any option builds a JSONEncoder on every call, which
# costs as much as encoding a small value (about 2 of 4 µs), and a command is encoded several
# times on its way. Each gives exactly what json.dumps with the same options gives; they hold
# no state between calls, so any thread may use them.
dumps_compact = json.JSONEncoder(separators=(",", ":")).encode
"""``json.dumps(value, separators=(",", ":"))``."""
dumps_strict = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
""":data:`dumps_compact` that raises ``ValueError`` for NaN and infinities (not JSON)."""
dumps_canonical = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
""":data:`dumps_compact` with keys sorted: equal values give equal text."""


def _opening_brackets(text: bytes | bytearray | str) -> int:
    if isinstance(text, str):
        return text.count("[") + text.count("{")
    return text.count(b"[") + text.count(b"{")


def nesting_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True if ``value`` nests lists, tuples or dicts more than ``limit`` levels deep.

    Iterative (no recursion, whatever the depth) and stops at the first container too deep.
    """
    if not isinstance(value, (dict, list, tuple)):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list, tuple)):
                stack.append((child, depth + 1))
    return False


def text_may_exceed(text: bytes | bytearray | str, limit: int = MAX_DEPTH) -> bool:
    """A cheap upper bound: False means ``text`` cannot nest deeper than ``limit``.

    Counts opening brackets (also those inside strings, hence only a bound), at C speed.
    """
    return _opening_brackets(text) > limit


def loads(text: bytes | bytearray | str, *, what: str = "body", max_depth: int = MAX_DEPTH) -> Any:
    """Decode ``text`` (UTF-8, -16 or -32 bytes, or str) into a JSON value.

    Raises :class:`InvalidJSONError` naming ``what`` when it is not JSON, not decodable, or
    nested deeper than ``max_depth``; never ``RecursionError``.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidJSONError(f"{what} is nested too deeply (limit {max_depth} levels)") from None
    except ValueError as exc:  # also UnicodeDecodeError
        raise InvalidJSONError(f"{what} is not valid JSON: {exc}") from None
    if text_may_exceed(text, max_depth) and nesting_exceeds(value, max_depth):
        raise InvalidJSONError(f"{what} is nested too deeply (limit {max_depth} levels)")
    return value
