"""The outbox: batching, requeueing after a failed write, and what survives a session."""

from __future__ import annotations

import asyncio

import pytest

from taskwire.v1 import worker_service_pb2 as wpb
from taskwire.worker import _outbox
from taskwire.worker._executor import AttemptKey
from taskwire.worker._outbox import Outbox, OutboxEntry

A = AttemptKey("run-a", 1)
B = AttemptKey("run-b", 1)


def started(key: AttemptKey) -> wpb.WorkerMessage:
    return wpb.WorkerMessage(started=wpb.AttemptStarted(ref=wpb.AttemptRef(task_run_id=key.task_run_id, attempt=1)))


def heartbeat() -> wpb.WorkerMessage:
    return wpb.WorkerMessage(heartbeat=wpb.Heartbeat())


def kinds(entries: list[OutboxEntry]) -> list[str | None]:
    return [entry.message.WhichOneof("kind") for entry in entries]


async def test_everything_ready_goes_in_one_batch() -> None:
    outbox = Outbox()
    outbox.put(started(A), attempt=A)
    outbox.put(heartbeat(), session_only=True)
    outbox.put(started(B), attempt=B)
    batch = await outbox.take()
    assert kinds(batch) == ["started", "heartbeat", "started"]


async def test_take_does_not_wait_for_more_than_one_message() -> None:
    outbox = Outbox()
    taker = asyncio.create_task(outbox.take())
    await asyncio.sleep(0)
    assert not taker.done()
    outbox.put(started(A), attempt=A)
    batch = await asyncio.wait_for(taker, 5)
    assert len(batch) == 1


async def test_batches_are_bounded() -> None:
    outbox = Outbox(max_batch=2)
    for _ in range(5):
        outbox.put(heartbeat())
    assert [len(await outbox.take()) for _ in range(3)] == [2, 2, 1]


async def test_a_failed_write_puts_the_batch_back_in_front_without_session_messages() -> None:
    outbox = Outbox()
    outbox.put(started(A), attempt=A)
    outbox.put(heartbeat(), session_only=True)
    batch = await outbox.take()
    outbox.put(started(B), attempt=B)
    outbox.requeue(batch)
    assert outbox.pending_attempts() == {A, B}
    assert kinds(await outbox.take()) == ["started", "started"]


async def test_flushed_only_once_written() -> None:
    outbox = Outbox()
    assert await outbox.wait_flushed(0)
    outbox.put(started(A), attempt=A)
    batch = await outbox.take()
    assert not await outbox.wait_flushed(0.01)  # taken, not yet written
    outbox.written(batch)
    assert await outbox.wait_flushed(0)
    assert len(outbox) == 0


async def test_end_session_drops_session_only_messages() -> None:
    outbox = Outbox()
    outbox.put(heartbeat(), session_only=True)
    outbox.put(started(A), attempt=A)
    outbox.end_session()
    assert kinds(await outbox.take()) == ["started"]


async def test_drop_attempt_forgets_its_messages() -> None:
    outbox = Outbox()
    outbox.put(started(A), attempt=A)
    outbox.put(started(B), attempt=B)
    assert outbox.drop_attempt(A) == 1
    assert outbox.pending_attempts() == {B}


async def test_front_overtakes_queued_reports() -> None:
    outbox = Outbox()
    outbox.put(started(A), attempt=A)
    outbox.put(wpb.WorkerMessage(draining=wpb.Draining()), session_only=True, front=True)
    assert kinds(await outbox.take()) == ["draining", "started"]


async def test_overflow_drops_the_oldest_progress_never_reports() -> None:
    outbox = Outbox(max_buffered=3)
    outbox.put(started(A), attempt=A)
    progress = [wpb.WorkerMessage(progress=wpb.AttemptProgress(fraction=f / 10, message=str(f))) for f in range(1, 5)]
    for message in progress:
        outbox.put(message, attempt=A, droppable=True)
    batch = await outbox.take()
    assert kinds(batch) == ["started", "progress", "progress"]
    assert [entry.message.progress.message for entry in batch[1:]] == ["3", "4"]
    assert outbox.dropped == 2


def completed(key: AttemptKey) -> wpb.WorkerMessage:
    ref = wpb.AttemptRef(task_run_id=key.task_run_id, attempt=1)
    return wpb.WorkerMessage(completed=wpb.AttemptCompleted(ref=ref))


async def test_a_lingering_message_rides_with_the_next_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_outbox, "LINGER_S", 3600.0)
    outbox = Outbox()
    taker = asyncio.create_task(outbox.take())
    outbox.put(started(A), attempt=A, linger=True)
    for _ in range(10):
        await asyncio.sleep(0)
    assert not taker.done()  # alone, it does not wake the writer
    assert outbox.pending_attempts() == {A}  # but it is queued: a heartbeat lists its attempt
    outbox.put(completed(A), attempt=A)
    assert kinds(await asyncio.wait_for(taker, 5)) == ["started", "completed"]


async def test_a_lingering_message_goes_alone_after_the_linger() -> None:
    outbox = Outbox()
    began = asyncio.get_running_loop().time()
    outbox.put(started(A), attempt=A, linger=True)
    batch = await asyncio.wait_for(outbox.take(), 5)
    assert kinds(batch) == ["started"]
    assert asyncio.get_running_loop().time() - began >= _outbox.LINGER_S * 0.9


async def test_a_flush_does_not_wait_for_the_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_outbox, "LINGER_S", 3600.0)
    outbox = Outbox()
    outbox.put(started(A), attempt=A, linger=True)

    async def writer() -> None:
        while True:
            outbox.written(await outbox.take())

    writing = asyncio.create_task(writer())
    try:
        assert await outbox.wait_flushed(5)
    finally:
        writing.cancel()


async def test_a_lingering_message_that_left_early_leaves_no_timer_behind() -> None:
    # The next lingering message waits its own full linger: the timer of one that already left with a
    # frame neither sends it early nor wakes the loop for nothing.
    outbox = Outbox()
    outbox.put(started(A), attempt=A, linger=True)
    outbox.put(completed(A), attempt=A)
    assert kinds(await asyncio.wait_for(outbox.take(), 5)) == ["started", "completed"]
    await asyncio.sleep(_outbox.LINGER_S / 2)  # the first message's linger would end halfway through the next
    began = asyncio.get_running_loop().time()
    outbox.put(started(B), attempt=B, linger=True)
    assert kinds(await asyncio.wait_for(outbox.take(), 5)) == ["started"]
    assert asyncio.get_running_loop().time() - began >= _outbox.LINGER_S * 0.9
