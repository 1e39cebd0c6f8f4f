"""InputBatch: kicks inside a batch are held and processed once when the outermost one ends;
the transport enters the batch around the callbacks of each read."""

from __future__ import annotations

import logging

import pytest

from tsconsensus.raft.input_batch import InputBatch

from .transport_net import Net, append, run, until


def test_held_work_runs_once_when_the_outermost_batch_ends() -> None:
    runs: list[int] = []
    batch = InputBatch(lambda: runs.append(1))
    assert batch.hold() is False  # outside: the caller schedules as usual
    with batch:
        assert batch.hold() is True
        with batch:
            assert batch.hold() is True
        assert runs == []  # the inner end is not the outermost
        assert batch.hold() is True
    assert runs == [1]
    with batch:
        pass
    assert runs == [1]  # nothing held, nothing run


def test_an_error_in_the_held_work_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def fails() -> None:
        raise RuntimeError("boom")

    batch = InputBatch(fails)
    with caplog.at_level(logging.ERROR, logger="tsconsensus.raft"), batch:
        batch.hold()
    assert "after a batch of inputs failed" in caplog.text and "boom" in caplog.text
    assert batch.hold() is False  # the batch is closed again


def test_an_error_from_the_inputs_still_runs_what_was_held() -> None:
    runs: list[int] = []
    batch = InputBatch(lambda: runs.append(1))
    with pytest.raises(ValueError), batch:
        batch.hold()
        raise ValueError("an input failed")
    assert runs == [1] and batch.hold() is False


def test_each_read_delivers_its_messages_inside_the_batch() -> None:
    """Messages arrive in the callback with the batch entered; the held work runs after them."""

    async def main() -> None:
        async with Net() as net:
            events: list[str] = []
            batch = InputBatch(lambda: events.append("process"))
            a = await net.node(1)
            b = await net.node(2, batch=batch)

            def on_message(msg: object) -> None:
                events.append("message")
                assert batch.hold() is True  # inside the read's batch

            b.transport._receiver._on_message = on_message
            for i in range(20):
                a.transport.send(append(1, 2, index=i))
            await until(lambda: events.count("message") == 20, "every message")
            await until(lambda: events[-1] == "process", "the batch's end")
            # one process per read, after that read's messages, never before the first one
            assert events[0] == "message"
            assert 1 <= events.count("process") <= 20
            assert all(events[i - 1] == "message" for i, e in enumerate(events) if e == "process")

    run(main())
