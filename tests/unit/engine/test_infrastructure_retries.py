"""Failures that are not the handler's fault are retried by default, on a budget of their own."""

from __future__ import annotations

from taskwire.common import DEFAULT_INFRASTRUCTURE_RETRIES, WORKER_SHUTDOWN_ERROR
from taskwire.server.domain import AttemptOutcome, ErrorInfo, ReasonCode, State
from tests.unit.engine.support import CONFIG, Rig, until

LEASE_S = CONFIG.lease_timeout.total_seconds()
BACKOFF_S = 60.0  # longer than any default backoff before the budget is spent


async def test_a_lost_worker_with_the_default_policy_is_retried_and_succeeds_on_the_next(rig: Rig) -> None:
    crashed = rig.connect("crashed")
    crashed.silent = True
    execution_id = await rig.submit()  # the default policy: one attempt for the handler
    rig.advance(LEASE_S)
    waiting = await rig.task_run(execution_id)
    assert waiting.state is State.WAITING
    assert waiting.reason is not None
    assert waiting.reason.code is ReasonCode.RETRY_BACKOFF

    healthy = rig.connect("healthy")
    rig.advance(BACKOFF_S)
    await until(lambda: healthy.invocations, "the retry dispatched to the next worker")
    (second,) = healthy.invocations
    assert second.key[1] == 2
    healthy.complete(second)
    snapshot = await rig.snapshot(execution_id)
    assert snapshot.execution.state is State.SUCCESS
    (task_run,) = snapshot.task_runs
    assert [a.outcome for a in task_run.attempts] == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]


async def test_once_the_infrastructure_budget_is_spent_the_task_fails_worker_lost(rig: Rig) -> None:
    execution_id = ""
    for n in range(DEFAULT_INFRASTRUCTURE_RETRIES + 1):
        if n == 0:
            execution_id = await rig.submit()
        else:
            assert (await rig.task_run(execution_id)).state is State.WAITING, f"lost {n} times: retried"
            rig.advance(BACKOFF_S)  # the backoff, with no worker connected: the retry queues
        worker = rig.connect(f"w{n}")
        worker.silent = True
        await until(lambda w=worker: w.invocations, f"attempt {n + 1} dispatched")  # type: ignore[misc]
        rig.advance(LEASE_S)
    snapshot = await rig.snapshot(execution_id)
    assert snapshot.execution.state is State.FAILED
    (task_run,) = snapshot.task_runs
    assert task_run.reason is not None
    assert task_run.reason.code is ReasonCode.WORKER_LOST
    assert snapshot.execution.reason is not None
    assert snapshot.execution.reason.code is ReasonCode.WORKER_LOST
    assert [a.outcome for a in task_run.attempts] == [AttemptOutcome.LOST] * (DEFAULT_INFRASTRUCTURE_RETRIES + 1)


async def test_a_worker_shutdown_is_retried_and_a_handler_error_still_fails_at_once(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit()
    (first,) = worker.invocations
    worker.fail(first, ErrorInfo(type=WORKER_SHUTDOWN_ERROR, message="the worker shut down"))
    waiting = await rig.task_run(execution_id)
    assert waiting.state is State.WAITING, "a worker shutdown is not the handler's fault: retried"
    rig.advance(BACKOFF_S)
    await until(lambda: len(worker.invocations) == 2, "the retry dispatched")
    second = worker.invocations[1]
    worker.fail(second, ErrorInfo(type="ValueError", message="boom"))
    snapshot = await rig.snapshot(execution_id)
    assert snapshot.execution.state is State.FAILED
    (task_run,) = snapshot.task_runs
    assert task_run.reason is not None
    assert task_run.reason.code is ReasonCode.HANDLER_ERROR, "the handler's own error follows its policy"
