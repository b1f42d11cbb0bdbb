"""A worker whose stream is backed up (it does not read) gets no new work, and loses its attempts after a lease."""

from __future__ import annotations

from datetime import timedelta

from taskwire.server.domain import AttemptOutcome, RetryPolicy, State
from tests.unit.engine.support import CONFIG, Rig, idle, task, until

LEASE_S = CONFIG.lease_timeout.total_seconds()


async def test_no_work_goes_to_a_backlogged_stream_until_it_drains(rig: Rig) -> None:
    worker = rig.connect(slots=4)
    rig.engine.worker_backlogged(worker.session, True)
    execution_id = await rig.submit()
    await idle()
    assert worker.invocations == []
    rig.engine.worker_backlogged(worker.session, False)
    await until(lambda: worker.invocations, "dispatched once the stream drained")
    worker.complete(worker.invocations[0])
    assert await rig.state(execution_id) is State.SUCCESS


async def test_a_stream_backlogged_for_a_lease_loses_its_attempts_to_another_worker(rig: Rig) -> None:
    stuck = rig.connect("stuck", slots=4)
    policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=0.1))
    execution_id = await rig.submit(task(retry_policy=policy))
    (first,) = stuck.invocations
    rig.engine.worker_backlogged(stuck.session, True)  # heartbeats still come, the stream is not read
    healthy = rig.connect("healthy")
    rig.advance(LEASE_S - 1)
    assert (await rig.task_run(execution_id)).state is State.RUNNING
    rig.advance(1)
    assert stuck.link.closed
    rig.advance(0.1)  # the backoff
    await until(lambda: healthy.invocations, "the attempt retried on the healthy worker")
    assert healthy.invocations[0].key == (first.task_run.id, 2)
    healthy.complete(healthy.invocations[0])
    done = await rig.task_run(execution_id)
    assert [attempt.outcome for attempt in done.attempts] == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
