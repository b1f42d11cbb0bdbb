"""The server's timers through the engine: task and execution timeouts, retry backoff, schedules."""

from __future__ import annotations

from datetime import timedelta

from taskwire.server.domain import AttemptOutcome, ReasonCode, RetryPolicy, State
from tests.unit.engine.support import Cancelled, Rig, idle, task, until


async def test_a_task_timeout_fails_the_attempt_and_stops_its_handler(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit(task(timeout=timedelta(seconds=30)))
    (invoked,) = worker.invocations
    assert invoked.attempt.started_at + timedelta(seconds=30) == rig.clock.now() + timedelta(seconds=30)
    rig.advance(29.9)
    assert (await rig.task_run(execution_id)).state is State.RUNNING
    rig.advance(0.1)
    snapshot = await rig.snapshot(execution_id)
    task_run = snapshot.task_runs[0]
    assert snapshot.execution.state is State.FAILED
    assert task_run.reason is not None
    assert task_run.reason.code is ReasonCode.TIMED_OUT
    assert task_run.attempts[0].outcome is AttemptOutcome.TIMED_OUT
    assert worker.cancels == [Cancelled(invoked.task_run.id, 1, worker.cancels[0].reason)]
    assert worker.cancels[0].reason.code is ReasonCode.TIMED_OUT
    # The slot stays taken until the worker says its handler stopped.
    assert worker.held == {invoked.key}
    worker.acknowledge(worker.cancels[0])
    assert worker.held == set()
    assert (await rig.task_run(execution_id)).state is State.FAILED


async def test_a_completion_in_time_disarms_the_timeout(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit(task(timeout=timedelta(seconds=30)))
    worker.complete(worker.invocations[0])
    rig.advance(60)
    assert await rig.state(execution_id) is State.SUCCESS
    assert worker.cancels == []


async def test_retry_backoff_waits_its_interval_then_grows(rig: Rig) -> None:
    worker = rig.connect()
    policy = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=10), backoff_coefficient=2.0)
    execution_id = await rig.submit(task(retry_policy=policy))
    worker.fail(worker.invocations[0])
    waiting = await rig.task_run(execution_id)
    assert waiting.state is State.WAITING
    assert waiting.not_before == rig.clock.now() + timedelta(seconds=10)

    for attempt, backoff_s in ((2, 10), (3, 20)):
        rig.advance(backoff_s - 0.1)
        await idle()
        assert len(worker.invocations) == attempt - 1, f"attempt {attempt} waits for its backoff"
        rig.advance(0.1)
        await until(lambda: len(worker.invocations) == attempt, f"attempt {attempt} dispatched")  # noqa: B023
        worker.fail(worker.invocations[-1])
    task_run = await rig.task_run(execution_id)
    assert task_run.state is State.FAILED
    assert task_run.reason is not None
    assert task_run.reason.code is ReasonCode.RETRIES_EXHAUSTED


async def test_an_execution_timeout_stops_queued_and_running_work(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit(task(task_id="a"), task(task_id="b"), timeout=timedelta(minutes=1))
    (running,) = worker.invocations
    rig.advance(60)
    snapshot = await rig.snapshot(execution_id)
    states = {t.task_id: t.state for t in snapshot.task_runs}
    assert states == {"a": State.RUNNING, "b": State.CANCELLED} or states == {"a": State.CANCELLED, "b": State.RUNNING}
    assert snapshot.execution.state is State.RUNNING, "closing: it waits for the running attempt to stop"
    (cancel,) = worker.cancels
    assert cancel.task_run_id == running.task_run.id
    assert cancel.reason.code is ReasonCode.EXECUTION_TIMED_OUT
    worker.acknowledge(cancel)
    snapshot = await rig.snapshot(execution_id)
    assert snapshot.execution.state is State.FAILED
    assert snapshot.execution.reason is not None
    assert snapshot.execution.reason.code is ReasonCode.EXECUTION_TIMED_OUT


async def test_a_scheduled_execution_waits_for_its_time(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit(not_before=rig.clock.now() + timedelta(minutes=5))
    assert await rig.state(execution_id) is State.WAITING
    rig.advance(299)
    await idle()
    assert worker.invocations == []
    rig.advance(1)
    await until(lambda: worker.invocations, "dispatched at its time")
    assert await rig.state(execution_id) is State.RUNNING


async def test_a_task_no_worker_starts_fails_at_its_schedule_to_start_timeout(rig: Rig) -> None:
    execution_id = await rig.submit(task("unserved", schedule_to_start_timeout=timedelta(seconds=30)))
    rig.advance(29.9)
    assert (await rig.task_run(execution_id)).state is State.PENDING
    rig.advance(0.1)
    snapshot = await rig.snapshot(execution_id)
    task_run = snapshot.task_runs[0]
    assert task_run.state is State.FAILED
    assert task_run.reason is not None
    assert task_run.reason.code is ReasonCode.SCHEDULE_TO_START_TIMEOUT
    assert task_run.attempts == ()
    assert snapshot.execution.state is State.FAILED
    assert snapshot.execution.reason is not None
    assert snapshot.execution.reason.code is ReasonCode.SCHEDULE_TO_START_TIMEOUT
    # The queue gave its place back.
    assert rig.engine.stats().queue.size == 0


async def test_each_wait_in_the_queue_has_its_own_schedule_to_start_timeout(rig: Rig) -> None:
    worker = rig.connect()
    policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=5))
    execution_id = await rig.submit(task(schedule_to_start_timeout=timedelta(seconds=10), retry_policy=policy))
    worker.fail(worker.invocations[0])  # started in time: the first wait's timer no longer applies
    worker.drain()  # no worker will take the retry
    rig.advance(5)  # the backoff ends: queued again, counted afresh
    assert (await rig.task_run(execution_id)).state is State.PENDING
    rig.advance(9.9)
    assert (await rig.task_run(execution_id)).state is State.PENDING
    rig.advance(0.1)
    task_run = await rig.task_run(execution_id)
    assert task_run.state is State.FAILED
    assert task_run.reason is not None
    assert task_run.reason.code is ReasonCode.SCHEDULE_TO_START_TIMEOUT
    assert [attempt.outcome for attempt in task_run.attempts] == [AttemptOutcome.FAILED]


async def test_the_schedule_to_start_timer_comes_back_after_a_restart(rig: Rig) -> None:
    execution_id = await rig.submit(task("unserved", schedule_to_start_timeout=timedelta(seconds=30)))
    rig.advance(20)
    await rig.restart()
    rig.advance(9.9)
    assert (await rig.task_run(execution_id)).state is State.PENDING
    rig.advance(0.1)
    task_run = await rig.task_run(execution_id)
    assert task_run.state is State.FAILED
    assert task_run.reason is not None
    assert task_run.reason.code is ReasonCode.SCHEDULE_TO_START_TIMEOUT
