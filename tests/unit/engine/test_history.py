"""History: every change numbered in order; watchers replay what is stored, then follow what is durable."""

from __future__ import annotations

import asyncio

import pytest

from taskwire.server.domain import NotFound, ValidationError
from taskwire.server.store import EventRecord
from taskwire.v1 import types_pb2 as pb
from tests.unit.engine.support import Rig, idle, until


def kinds(records: list[EventRecord]) -> list[str]:
    return [pb.ExecutionEvent.FromString(record.body).WhichOneof("body") or "" for record in records]


async def collect(rig: Rig, execution_id: str, after: int = 0) -> list[EventRecord]:
    return [record async for record in rig.engine.watch(execution_id, after)]


async def test_a_finished_execution_replays_its_whole_history_in_order(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit()
    (invoked,) = worker.invocations
    worker.progress(invoked, 0.5, "half way")
    worker.progress(invoked, 0.5, "half way")  # the same again: nothing new to record
    worker.log(invoked, "hello")
    worker.complete(invoked)
    await rig.engine.flush()

    records = await collect(rig, execution_id)
    assert [record.sequence for record in records] == list(range(1, len(records) + 1))
    assert kinds(records) == [
        "execution_transition",  # accepted
        "task_run_transition",  # dispatched
        "execution_transition",  # started
        "progress",
        "log",
        "task_run_transition",  # succeeded
        "execution_transition",  # succeeded
    ]
    progress = pb.ExecutionEvent.FromString(records[3].body).progress
    assert (progress.fraction, progress.message, progress.attempt) == (0.5, "half way", 1)
    log_line = pb.ExecutionEvent.FromString(records[4].body).log
    assert (log_line.text, log_line.task_run_id) == ("hello", invoked.task_run.id)
    assert [record.sequence for record in await collect(rig, execution_id, after=5)] == [6, 7]


async def test_a_watcher_follows_live_events_until_the_end(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit()
    seen: list[int] = []

    async def watch() -> None:
        async for record in rig.engine.watch(execution_id, 0):
            seen.append(record.sequence)

    watcher = asyncio.ensure_future(watch())
    await until(lambda: len(seen) == 3, "the stored history replayed")
    worker.complete(worker.invocations[0])
    await watcher
    assert seen == [1, 2, 3, 4, 5]


async def test_a_watch_from_past_the_end_of_a_live_execution_ends_with_it(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit()
    watching = asyncio.ensure_future(collect(rig, execution_id, after=100))
    await idle(30)  # it replays nothing from the store and follows the live events
    assert not watching.done()
    worker.complete(worker.invocations[0])
    assert await asyncio.wait_for(watching, timeout=5) == []


async def test_watching_an_unknown_execution_or_from_a_negative_sequence_is_refused(rig: Rig) -> None:
    with pytest.raises(NotFound):
        await collect(rig, "no-such-execution")
    execution_id = await rig.submit()
    with pytest.raises(ValidationError):
        await collect(rig, execution_id, after=-1)
