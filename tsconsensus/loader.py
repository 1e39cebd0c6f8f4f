"""Loading a user's state machine by import path (``module:factory``)."""

from __future__ import annotations

import importlib
from typing import Any

from .errors import StateMachineLoadError
from .kv import KeyValueMachine
from .types import StateMachine


def load_state_machine(spec: str) -> StateMachine:
    """Build the state machine named by ``module:factory``; empty means the built-in KV machine.

    ``factory`` is called with no arguments (a class or a function). Raises
    :class:`StateMachineLoadError` naming what failed: the import, the attribute, the call, or
    an object that lacks ``apply``/``snapshot``/``restore``.
    """
    if not spec:
        return KeyValueMachine()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise StateMachineLoadError(f"state machine {spec!r} must look like 'module:factory'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise StateMachineLoadError(f"cannot import {module_name!r} for {spec!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise StateMachineLoadError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise StateMachineLoadError(f"{spec!r} is not callable")
    try:
        machine = target()
    except Exception as exc:
        raise StateMachineLoadError(f"calling {spec!r} failed: {exc}") from exc
    missing = [
        m for m in ("apply", "snapshot", "restore") if not callable(getattr(machine, m, None))
    ]
    if missing:
        raise StateMachineLoadError(f"{spec!r} built an object without {', '.join(missing)}")
    result: StateMachine = machine
    return result
