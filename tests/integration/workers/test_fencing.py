"""Fencing, driven by a scripted worker on a real `WorkerService.Connect` stream.

A completion sent twice changes nothing the second time; a completion from an attempt the server has
fenced (timed out, or lost with its lease) is ignored, and the result comes from the attempt after it.
Every late or duplicate report is sent while its execution is still live, so it reaches the state
machine rather than being dropped because the execution was already finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from taskwire.client import (
    AsyncClient,
    AttemptOutcome,
    ExecutionSpec,
    RetryPolicy,
    State,
    TaskRun,
    TaskRunTransition,
    TaskSpec,
    WatchEvent,
)
from taskwire.v1 import worker_service_pb2 as wpb
from tests.harness import ServerProcess
from tests.integration.workers.support import (
    FINISH,
    ScriptedWorker,
    completed,
    history,
    json_output,
    only_run,
    outcomes,
    ref_of,
    transitions,
    until,
)


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.address) as client:
        yield client


@pytest.fixture
async def scripted(server: ServerProcess) -> AsyncIterator[list[ScriptedWorker]]:
    """Scripted workers made by a test (appended to this list) are closed at the end."""
    workers: list[ScriptedWorker] = []
    yield workers
    for worker in workers:
        await worker.close()


def successes(events: list[WatchEvent], task_id: str) -> list[TaskRunTransition]:
    return [t for t in transitions(events, task_id) if t.to_state is State.SUCCESS]


async def test_a_duplicated_completion_changes_nothing(
    server: ServerProcess, client: AsyncClient, scripted: list[ScriptedWorker]
) -> None:
    worker = ScriptedWorker(server.address, name="duplicator", slots=2)
    scripted.append(worker)
    await worker.connect()
    worker.start_heartbeats()
    spec = ExecutionSpec(tasks=(TaskSpec(handler="scripted", task_id="a"), TaskSpec(handler="scripted", task_id="b")))
    execution = await client.submit_execution(spec)
    invocations = {inv.task_id: ref_of(inv) for inv in [await worker.invocation(), await worker.invocation()]}
    a, b = invocations["a"], invocations["b"]

    await worker.send(completed(a, {"n": 1}))
    seen: list[WatchEvent] = []
    async with contextlib.aclosing(client.watch(execution.id, timeout=FINISH)) as watch:
        async for event in watch:
            seen.append(event)
            if isinstance(event, TaskRunTransition) and event.task_id == "a" and event.to_state is State.SUCCESS:
                break
    # While "b" still runs: the same report again, then in one frame a different one and the same again.
    await worker.send(completed(a, {"n": 1}))
    await worker.send(completed(a, {"n": 2}), completed(a, {"n": 1}))
    await worker.send(completed(b, "b done"))  # the same stream: handled after the duplicates
    done = await client.wait_finished(execution.id, FINISH)

    assert done.state is State.SUCCESS, done
    run_a = done.task_run("a")
    assert outcomes(run_a) == [AttemptOutcome.SUCCEEDED], run_a.attempts
    assert json_output(run_a.attempts[0]) == {"n": 1}
    events = await history(client, execution.id)
    assert events[: len(seen)] == seen, "the duplicates rewrote history"
    after = [
        (e.task_id, e.to_state) if isinstance(e, TaskRunTransition) else type(e).__name__ for e in events[len(seen) :]
    ]
    assert after == [("b", State.SUCCESS), "ExecutionTransition"], after
    assert [t.attempt for t in successes(events, "a")] == [1]


async def test_a_late_completion_of_a_timed_out_attempt_is_ignored(
    server: ServerProcess, client: AsyncClient, scripted: list[ScriptedWorker]
) -> None:
    # Two slots, yet attempt 2 waits until the worker reports on the fenced attempt 1: never two attempts
    # of one task run on one worker at once.
    worker = ScriptedWorker(server.address, name="slowpoke", slots=2)
    scripted.append(worker)
    await worker.connect()
    worker.start_heartbeats()
    policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=0.1))
    # Attempt 1 is left to time out; attempt 2 has as long to be completed by the test.
    execution = await client.submit("scripted", {"x": 1}, timeout=timedelta(seconds=1.5), retry_policy=policy)
    first = ref_of(await worker.invocation())
    cancel = (await worker.next("cancel")).cancel
    assert (cancel.ref.task_run_id, cancel.ref.attempt, cancel.reason) == (*first, wpb.CANCEL_REASON_TIMED_OUT)
    worker.running.discard(first)  # as a worker agent does once it has reported an attempt's end
    await worker.send(completed(first, "stale"))
    second = ref_of(await worker.invocation())
    assert second == (first[0], 2)
    await worker.send(completed(second, "fresh"))
    done = await client.wait_finished(execution.id, FINISH)

    assert done.state is State.SUCCESS, done
    run = only_run(done)
    assert outcomes(run) == [AttemptOutcome.TIMED_OUT, AttemptOutcome.SUCCEEDED], run.attempts
    assert run.attempts[0].output is None
    assert json_output(run.attempts[1]) == "fresh"
    assert done.output == "fresh"
    events = await history(client, execution.id)
    assert [t.attempt for t in successes(events, run.task_id)] == [2]
    # The stale report still freed the slot its attempt held.
    await until(lambda: _in_flight(client, "slowpoke", 0), what="the fenced attempt's slot to be freed")


async def test_a_late_completion_after_the_lease_lapsed_is_ignored(
    server: ServerProcess, client: AsyncClient, scripted: list[ScriptedWorker]
) -> None:
    silent = ScriptedWorker(server.address, name="silent", slots=1)
    scripted.append(silent)
    await silent.connect()  # and never heartbeats
    policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=0.1))
    execution = await client.submit("scripted", {"x": 1}, retry_policy=policy)
    first = ref_of(await silent.invocation())
    healthy = ScriptedWorker(server.address, name="healthy", slots=1)
    scripted.append(healthy)
    await healthy.connect()
    healthy.start_heartbeats()

    second = ref_of(await healthy.invocation(timeout_s=15))
    assert second == (first[0], 2)
    async with asyncio.timeout(5):
        await silent.stream_ended.wait()  # the server dropped the session that lost its lease
    # The silent worker comes back, still running attempt 1: the server rejects it ...
    welcome = await silent.connect(reporting=[first])
    assert [(r.task_run_id, r.attempt) for r in welcome.rejected_attempts] == [first]
    assert list(welcome.adopted_attempts) == []
    # ... and ignores its completion, which is handled (the session's last-seen time moves) while
    # attempt 2 still runs.
    before = await _last_seen(client, "silent")
    await silent.send(completed(first, "stale"))
    await until(lambda: _seen_after(client, "silent", before), what="the stale completion to be handled")
    # GetExecution shows what is durable, which may trail the dispatch the healthy worker already got.
    running = await until(lambda: _settled_view(client, execution.id), what="attempt 2 to show as running")
    assert running.state is State.RUNNING, running
    assert outcomes(running) == [AttemptOutcome.LOST, AttemptOutcome.RUNNING]

    await healthy.send(completed(second, "fresh"))
    done = await client.wait_finished(execution.id, FINISH)
    assert done.state is State.SUCCESS, done
    run = only_run(done)
    assert outcomes(run) == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED], run.attempts
    assert [a.worker_id for a in run.attempts] == ["silent", "healthy"]
    assert run.attempts[0].output is None
    assert json_output(run.attempts[1]) == "fresh"
    events = await history(client, execution.id)
    assert [t.attempt for t in successes(events, run.task_id)] == [2]


async def _settled_view(client: AsyncClient, execution_id: str) -> TaskRun | None:
    """The task run once GetExecution shows attempt 2 (or an end): None while it still shows less."""
    run = only_run(await client.get(execution_id))
    return run if run.attempt_count == 2 or run.state.is_terminal else None


async def _in_flight(client: AsyncClient, name: str, expected: int) -> bool:
    return any(info.name == name and info.in_flight == expected for info in await client.workers())


async def _last_seen(client: AsyncClient, name: str) -> datetime:
    (info,) = [info for info in await client.workers() if info.name == name]
    assert info.last_seen_at is not None
    return info.last_seen_at


async def _seen_after(client: AsyncClient, name: str, before: datetime) -> bool:
    return any(
        info.name == name and info.last_seen_at is not None and info.last_seen_at > before
        for info in await client.workers()
    )


async def test_a_worker_cannot_adopt_an_attempt_another_worker_holds(
    server: ServerProcess, client: AsyncClient, scripted: list[ScriptedWorker]
) -> None:
    # The attempt number alone must not hand over work: a second worker that claims attempt 1 while
    # the worker it was dispatched to still holds it is refused, and the result stays the holder's.
    holder = ScriptedWorker(server.address, name="holder", slots=1)
    scripted.append(holder)
    await holder.connect()
    holder.start_heartbeats()
    execution = await client.submit("scripted", {"x": 1})
    ref = ref_of(await holder.invocation())
    claimant = ScriptedWorker(server.address, name="claimant", slots=1)
    scripted.append(claimant)
    welcome = await claimant.connect(reporting=[ref])
    assert [(r.task_run_id, r.attempt) for r in welcome.rejected_attempts] == [ref]
    assert list(welcome.adopted_attempts) == []
    await claimant.send(completed(ref, "claimed"))
    await holder.send(completed(ref, "held"))
    done = await client.wait_finished(execution.id, FINISH)
    assert done.state is State.SUCCESS, done
    assert done.output == "held"
