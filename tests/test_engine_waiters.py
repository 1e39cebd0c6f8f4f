"""A caller waiting for a command is answered only by that command's outcome, even when an
older entry that used the same request id for another command is applied after it started
waiting (a follower answers from the leader's results before it applies the entry itself)."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from typing import Any

import pytest

from tsconsensus import Command, KeyValueMachine
from tsconsensus._applier import LogApplier, command_hash, encode_entry, join_entries
from tsconsensus._engine import EngineNode
from tsconsensus._forwarding import encode_results
from tsconsensus._outcomes import Refusal
from tsconsensus.raft import Entry, EntryKind
from tsconsensus.types import CommandResult


@pytest.fixture
def engine() -> Iterator[EngineNode]:
    loop = asyncio.new_event_loop()
    driver: dict[str, Any] = {}

    def make_driver(**kwargs: Any) -> Any:
        driver.update(kwargs)
        return types.SimpleNamespace(applied=0, core=types.SimpleNamespace(id=0x1234))

    node = EngineNode(
        loop=loop,
        make_driver=make_driver,
        applier=LogApplier(KeyValueMachine()),
        address="127.0.0.1:6270",
        max_batch_bytes=1 << 20,
    )
    node.apply_for_test = driver["apply"]  # type: ignore[attr-defined]
    yield node
    loop.close()


def _entry(index: int, rid: str, command: Command) -> Entry:
    data = join_entries([encode_entry(rid, command)])
    return Entry(index, 1, EntryKind.NORMAL, data, 0)


SET = Command("set", {"k": 1})
DELETE = Command("delete", {"key": "k"})


def _wait_for(engine: EngineNode, command: Command) -> list[tuple[object, object]]:
    got: list[tuple[object, object]] = []
    engine.submit(
        encode_entry("once", command),
        lambda result, reason: got.append((result, reason)),
        request_id="once",
        digest=command_hash(command),
    )
    return got


def test_an_older_entry_with_the_same_id_does_not_answer_another_command(
    engine: EngineNode,
) -> None:
    apply = engine.apply_for_test  # type: ignore[attr-defined]
    apply([_entry(1, "once", SET)])  # the first use of the id, applied
    got = _wait_for(engine, DELETE)  # the id reused for another command
    apply([_entry(2, "once", SET)])  # a retry of the first command, applied only now
    assert got == []  # not the set's outcome: the delete is still unanswered
    apply([_entry(3, "once", DELETE)])
    assert len(got) == 1
    result, reason = got[0]
    assert result is None and isinstance(reason, Refusal) and reason.kind == "reused"


def test_the_leaders_results_answer_only_the_same_command(engine: EngineNode) -> None:
    got = _wait_for(engine, DELETE)
    set_result = CommandResult(None, None, 5)
    engine._on_driver_frame(7, encode_results([("once", command_hash(SET), set_result)]))
    assert got == []
    refused = Refusal("reused", "request id 'once' was already used")
    engine._on_driver_frame(7, encode_results([("once", command_hash(DELETE), refused)]))
    assert len(got) == 1 and got[0][1] == refused


def test_a_retry_of_the_same_command_is_answered_by_the_first_outcome(
    engine: EngineNode,
) -> None:
    got = _wait_for(engine, SET)
    engine.apply_for_test([_entry(1, "once", SET)])  # type: ignore[attr-defined]
    assert len(got) == 1
    result, reason = got[0]
    assert reason is None and isinstance(result, CommandResult) and result.error is None
