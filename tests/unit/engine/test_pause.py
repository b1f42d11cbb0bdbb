"""A server that stood still (SIGSTOP, a suspended machine) judges no lease on the time it did not run."""

from __future__ import annotations

from taskwire.server.domain import AttemptOutcome, State
from tests.unit.engine.support import CONFIG, Rig

LEASE_S = CONFIG.lease_timeout.total_seconds()


async def test_a_pause_past_the_lease_expires_no_worker_whose_heartbeats_wait_to_be_read(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit()
    rig.advance(CONFIG.heartbeat_interval.total_seconds())

    rig.clock.jump(LEASE_S * 3)  # the timers run late, before the heartbeats queued meanwhile are read
    worker.heartbeat()

    assert (await rig.task_run(execution_id)).state is State.RUNNING
    assert rig.engine.workers() == [worker.session]
    assert not worker.link.closed
    (invoked,) = worker.invocations
    worker.complete(invoked)
    assert await rig.state(execution_id) is State.SUCCESS


async def test_a_worker_silent_after_the_pause_loses_its_lease_one_lease_later(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit()
    worker.silent = True
    rig.clock.jump(LEASE_S * 3)
    assert (await rig.task_run(execution_id)).state is State.RUNNING

    rig.advance(LEASE_S - 0.1)
    assert (await rig.task_run(execution_id)).state is State.RUNNING
    rig.advance(0.1)
    lost = await rig.task_run(execution_id)
    assert lost.state is State.WAITING, "lost with its worker: retried"
    assert lost.attempts[0].outcome is AttemptOutcome.LOST
    assert worker.link.closed
