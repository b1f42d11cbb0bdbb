"""Never two attempts of one task run on one worker at once, and a refusal the server caused costs no attempt."""

from __future__ import annotations

from datetime import timedelta

from taskwire.server.domain import AttemptOutcome, ErrorInfo, RetryPolicy, State
from tests.unit.engine.support import Rig, idle, task, until

TIMEOUT = timedelta(seconds=10)
RETRY_ONCE = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=1))


async def test_the_retry_after_a_server_side_timeout_waits_for_the_worker_still_running_attempt_1(rig: Rig) -> None:
    worker = rig.connect(slots=2)
    execution_id = await rig.submit(task(timeout=TIMEOUT, retry_policy=RETRY_ONCE))
    (first,) = worker.invocations

    rig.advance(TIMEOUT.total_seconds() + 1)  # timed out by the server, then the backoff
    assert (await rig.task_run(execution_id)).state is State.PENDING
    (cancel,) = worker.cancels
    assert (cancel.task_run_id, cancel.attempt) == first.key
    await idle()
    assert len(worker.invocations) == 1, "attempt 2 went to the worker still running attempt 1"

    worker.time_out(first)  # attempt 1's handler has stopped
    await until(lambda: len(worker.invocations) == 2, "attempt 2 dispatched")
    second = worker.invocations[1]
    assert second.key == (first.task_run.id, 2)
    worker.complete(second)
    assert await rig.state(execution_id) is State.SUCCESS


async def test_the_retry_goes_to_another_worker_meanwhile(rig: Rig) -> None:
    busy = rig.connect("busy", slots=2)
    execution_id = await rig.submit(task(timeout=TIMEOUT, retry_policy=RETRY_ONCE))
    (first,) = busy.invocations
    other = rig.connect("other")
    rig.advance(TIMEOUT.total_seconds() + 1)
    await until(lambda: other.invocations, "attempt 2 dispatched to the other worker")
    assert other.invocations[0].key == (first.task_run.id, 2)
    assert len(busy.invocations) == 1
    other.complete(other.invocations[0])
    assert await rig.state(execution_id) is State.SUCCESS


async def test_a_refused_attempt_is_not_counted_against_max_attempts(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit(task(retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1))))
    (first,) = worker.invocations
    worker.fail(first, ErrorInfo(type="AttemptAlreadyRunning", message="attempt 1 is still running here"))
    refused = await rig.task_run(execution_id)
    assert refused.state is State.WAITING
    assert refused.attempts[0].outcome is AttemptOutcome.FAILED

    rig.advance(1)
    await until(lambda: len(worker.invocations) == 2, "the attempt after the refusal dispatched")
    worker.complete(worker.invocations[1])
    assert await rig.state(execution_id) is State.SUCCESS


async def test_a_handler_error_still_counts(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit(task(retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1))))
    (first,) = worker.invocations
    worker.fail(first)
    assert await rig.state(execution_id) is State.FAILED
