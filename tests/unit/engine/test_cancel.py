"""Cancel: pending task runs at once, running ones on their worker, fenced after the grace period."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from taskwire.server._worker_wire import StreamLink
from taskwire.server.domain import AttemptOutcome, NotFound, ReasonCode, State
from taskwire.server.engine import WorkerHello
from taskwire.server.store import WriteBatch
from tests.unit.engine.support import CONFIG, Rig, idle, task, until

GRACE_S = CONFIG.cancel_grace.total_seconds()


async def test_a_pending_execution_is_cancelled_at_once(rig: Rig) -> None:
    execution_id = await rig.submit()
    snapshot, already_terminal = await rig.engine.cancel(execution_id, "changed my mind")
    assert not already_terminal
    assert snapshot.execution.state is State.CANCELLED
    assert snapshot.execution.reason is not None
    assert snapshot.execution.reason.message == "changed my mind"
    assert snapshot.task_runs[0].state is State.CANCELLED
    assert rig.engine.stats().queue.size == 0

    again, already_terminal = await rig.engine.cancel(execution_id, "again")
    assert already_terminal
    assert again.execution.state is State.CANCELLED


async def test_a_cancel_goes_down_its_worker_s_stream_before_its_commit_is_taken(rig: Rig) -> None:
    """The frame is on its way before the committer takes the change, encodes it and sends it to the store (the
    commit is what the cancel's caller waits for; the worker's abort is what the cancel is for)."""
    order: list[str] = []
    link = StreamLink()
    hello = WorkerHello(name="w1", instance_id="i-1", handlers=frozenset({"echo"}), slots=1, running_attempts=())
    rig.engine.connect_worker(hello, link, identity="")

    async def stream() -> None:
        async for frame in link.frames():
            order.extend(str(message.WhichOneof("kind")) for message in frame.messages)

    commit = rig.store.commit

    async def recording(batches: Sequence[WriteBatch]) -> list[Exception | None]:
        order.append("commit")
        return await commit(batches)

    rig.store.commit = recording  # type: ignore[method-assign]
    streaming = asyncio.create_task(stream())
    try:
        execution_id = await rig.submit()
        await until(lambda: "invocation" in order, "the invocation sent")
        order.clear()
        await rig.engine.cancel(execution_id, "stop")
        assert order[:2] == ["cancel", "commit"]
    finally:
        link.close()
        await streaming


async def test_a_running_task_run_is_cancelled_when_its_worker_confirms(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit()
    (invoked,) = worker.invocations
    snapshot, _ = await rig.engine.cancel(execution_id, "stop")
    assert snapshot.execution.state is State.RUNNING
    assert snapshot.task_runs[0].pending_cancel is not None
    (cancel,) = worker.cancels
    assert (cancel.task_run_id, cancel.attempt) == invoked.key
    assert cancel.reason.code is ReasonCode.EXECUTION_CANCELLED

    await rig.engine.cancel(execution_id, "stop!")
    assert len(worker.cancels) == 1, "cancelling again sends nothing again"

    worker.acknowledge(cancel)
    snapshot = await rig.snapshot(execution_id)
    assert snapshot.execution.state is State.CANCELLED
    attempt = snapshot.task_runs[0].attempts[0]
    assert (attempt.outcome, attempt.error) == (AttemptOutcome.CANCELLED, None)
    assert worker.held == set()


async def test_a_worker_that_never_confirms_is_fenced_after_the_grace_period(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit()
    (invoked,) = worker.invocations
    await rig.engine.cancel(execution_id, "stop")
    rig.advance(GRACE_S - 0.1)
    assert await rig.state(execution_id) is State.RUNNING
    rig.advance(0.1)
    snapshot = await rig.snapshot(execution_id)
    assert snapshot.execution.state is State.CANCELLED
    attempt = snapshot.task_runs[0].attempts[0]
    assert attempt.outcome is AttemptOutcome.CANCELLED
    assert attempt.error is not None
    assert attempt.error.type == "CancelNotAcknowledged"

    # Its handler may still be stopping over there: the slot stays taken until the worker says so.
    assert worker.held == {invoked.key}
    later = await rig.submit()
    await idle()
    assert len(worker.invocations) == 1
    worker.acknowledge(worker.cancels[0])  # late: the state does not change, the slot frees
    await until(lambda: len(worker.invocations) == 2, "the slot reused")
    assert worker.invocations[1].task_run.execution_id == later
    assert await rig.state(execution_id) is State.CANCELLED


async def test_cancelling_one_task_of_several_cancels_the_rest_of_the_execution(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit(task(task_id="first"), task(task_id="second", depends_on=("first",)))
    (invoked,) = worker.invocations
    await rig.engine.cancel(execution_id, "")
    snapshot = await rig.snapshot(execution_id)
    states = {t.task_id: t.state for t in snapshot.task_runs}
    assert states == {"first": State.RUNNING, "second": State.CANCELLED}
    worker.acknowledge(worker.cancels[0])
    assert await rig.state(execution_id) is State.CANCELLED
    assert worker.invocations == [invoked]


async def test_cancelling_an_unknown_execution_is_not_found(rig: Rig) -> None:
    with pytest.raises(NotFound, match="no-such-execution"):
        await rig.engine.cancel("no-such-execution", "")


async def test_many_executions_are_cancelled_in_one_commit_skipping_those_ended_or_gone(rig: Rig) -> None:
    queued = [await rig.submit() for _ in range(4)]  # no worker: all stay queued
    await rig.engine.cancel(queued[0], "earlier")
    commits = rig.count_commits()

    assert await rig.engine.cancel_many([*queued, "exe-unknown"], "bulk") == 3

    assert commits == [1]
    for execution_id in queued:
        assert await rig.state(execution_id) is State.CANCELLED
