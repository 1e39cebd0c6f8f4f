"""The built-in key-value state machine (what ``tsc node start`` runs unless told otherwise).

Commands (DESIGN section 3):

``set``    args ``{"k": v, ...}``: sets every key atomically; result ``{"k": previous or null}``.
``get``    args ``{"key": K}``: the value, or null.
``delete`` args ``{"key": K}``: ``true`` if the key existed.
``cas``    args ``{"key": K, "expected": V|null, "value": NEW}``: sets only if the current value
           equals ``expected`` (null = absent); result ``{"ok": bool, "value": current after}``.
``keys``   args ``{}`` or ``{"prefix": P}``: sorted list of keys.

Bad input raises :class:`ValueError` before anything changes, which the cluster turns into an
error result on every node alike.
"""

from __future__ import annotations

import json
from typing import Any

from .safejson import dumps_canonical
from .types import JSON, Command

_MISSING = object()
_DECODER = json.JSONDecoder()


def _dumps(value: Any) -> str:
    return dumps_canonical(value)


def _load_object(text: str) -> dict[str, JSON]:
    """Parse a JSON object one member at a time (each step short: see ``snapshot``)."""
    text = text.strip()
    if not text.startswith("{"):
        raise ValueError("key-value snapshot must be a JSON object")
    out: dict[str, JSON] = {}
    pos = 1
    end = len(text)
    raw = _DECODER.raw_decode
    while True:
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        if pos < end and text[pos] == "}" and not out:
            return out
        key, pos = raw(text, pos)
        if not isinstance(key, str):
            raise ValueError("key-value snapshot keys must be strings")
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        if pos >= end or text[pos] != ":":
            raise ValueError(f"malformed key-value snapshot at offset {pos}")
        pos += 1
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        out[key], pos = raw(text, pos)
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        if pos < end and text[pos] == ",":
            pos += 1
            continue
        if pos < end and text[pos] == "}" and not text[pos + 1 :].strip():
            return out
        raise ValueError(f"malformed key-value snapshot at offset {pos}")


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values, where ``true`` is not ``1`` (unlike Python's ``==``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _object_args(command: Command) -> dict[str, Any]:
    if not isinstance(command.args, dict):
        raise ValueError(f"{command.name}: args must be a JSON object, got {command.args!r}")
    return command.args


def _key_arg(command: Command) -> str:
    args = _object_args(command)
    key = args.get("key")
    if not isinstance(key, str):
        raise ValueError(f"{command.name}: args need a string 'key', got {args!r}")
    return key


class KeyValueMachine:
    """A dict of string keys to JSON values. Deterministic; one thread at a time (the Raft
    thread, or the node's loop: see ``StateMachine.quick_apply``)."""

    quick_apply = True
    """Every command is a few dict operations: the node may apply it on its loop thread."""

    def __init__(self) -> None:
        self._data: dict[str, JSON] = {}

    def is_read_only(self, command: Command) -> bool:
        """``get`` and ``keys`` only read: they are answered through ReadIndex, not the log."""
        return command.name in ("get", "keys")

    def apply(self, command: Command) -> JSON:
        handler = getattr(self, f"_cmd_{command.name}", None)
        if handler is None:
            raise ValueError(
                f"unknown command {command.name!r} (known: set, get, delete, cas, keys)"
            )
        result: JSON = handler(command)
        return result

    def _cmd_set(self, command: Command) -> JSON:
        args = _object_args(command)
        if not args:
            raise ValueError("set: args must name at least one key")
        previous = {k: self._data.get(k) for k in args}
        self._data.update(args)
        return previous

    def _cmd_get(self, command: Command) -> JSON:
        return self._data.get(_key_arg(command))

    def _cmd_delete(self, command: Command) -> JSON:
        return self._data.pop(_key_arg(command), _MISSING) is not _MISSING

    def _cmd_cas(self, command: Command) -> JSON:
        key = _key_arg(command)
        args = _object_args(command)
        if "value" not in args:
            raise ValueError("cas: args need 'value' (and 'expected', null meaning absent)")
        current = self._data.get(key)
        expected = args.get("expected")
        matches = (
            key not in self._data
            if expected is None
            else (key in self._data and json_equal(current, expected))
        )
        if matches:
            self._data[key] = args["value"]
            return {"ok": True, "value": args["value"]}
        return {"ok": False, "value": current}

    def _cmd_keys(self, command: Command) -> JSON:
        args = command.args if command.args is not None else {}
        if not isinstance(args, dict):
            raise ValueError(f"keys: args must be a JSON object, got {args!r}")
        prefix = args.get("prefix", "")
        if not isinstance(prefix, str):
            raise ValueError(f"keys: 'prefix' must be a string, got {prefix!r}")
        return sorted(k for k in self._data if k.startswith(prefix))

    def snapshot(self) -> bytes:
        """The state as one JSON object, keys sorted (the same bytes on every node). Encoded
        key by key: each step is short, so the node's other threads (heartbeats) keep running
        while a large state is serialized."""
        parts = [b"{"]
        for k in sorted(self._data):
            if len(parts) > 1:
                parts.append(b",")
            parts.append(f"{_dumps(k)}:{_dumps(self._data[k])}".encode())
        parts.append(b"}")
        return b"".join(parts)  # one copy of the whole, not one per concatenation

    def restore(self, data: bytes) -> None:
        """Load a :meth:`snapshot` (any JSON object of the same shape), value by value."""
        self._data = _load_object(data.decode()) if data else {}

    def __len__(self) -> int:
        return len(self._data)
