"""What a worker's heartbeats say it runs, reconciled with what its session holds."""

from __future__ import annotations

from datetime import timedelta

from taskwire.server.domain import AttemptOutcome, ReasonCode, RetryPolicy, State
from taskwire.server.engine import Heartbeat
from tests.unit.engine.support import Rig, idle, task, until

RETRY = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=1))


async def test_an_attempt_left_out_of_two_heartbeats_in_a_row_is_lost_and_retried(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit(task(retry_policy=RETRY))
    (first,) = worker.invocations

    worker.report(Heartbeat(()))  # may have been sent before the invocation arrived
    assert (await rig.task_run(execution_id)).state is State.RUNNING
    worker.report(Heartbeat(()))
    lost = await rig.task_run(execution_id)
    assert lost.state is State.WAITING
    assert lost.attempts[0].outcome is AttemptOutcome.LOST
    assert lost.attempts[0].error is not None
    assert lost.attempts[0].error.message == f"worker {worker.session.name} does not run it: its heartbeat left it out"
    assert worker.held == set()

    rig.advance(1)
    await until(lambda: len(worker.invocations) == 2, "the retry dispatched")
    assert worker.invocations[1].key == (first.task_run.id, 2)


async def test_a_listing_in_between_resets_the_count(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit()
    (first,) = worker.invocations
    worker.report(Heartbeat(()))
    worker.report(Heartbeat((first.key,)))
    worker.report(Heartbeat(()))
    assert (await rig.task_run(execution_id)).state is State.RUNNING


async def test_an_attempt_left_out_of_a_heartbeat_listing_a_later_dispatch_is_lost_at_once(rig: Rig) -> None:
    worker = rig.connect(slots=2)
    dropped_id = await rig.submit()
    kept_id = await rig.submit()
    _, kept = worker.invocations
    worker.report(Heartbeat((kept.key,)))  # the stream is ordered: the worker had the first before `kept`
    assert (await rig.task_run(dropped_id)).attempts[0].outcome is AttemptOutcome.LOST
    assert (await rig.task_run(kept_id)).state is State.RUNNING
    assert worker.held == {kept.key}


async def test_an_attempt_the_worker_runs_but_does_not_hold_is_stopped_and_takes_a_slot_meanwhile(rig: Rig) -> None:
    worker = rig.connect(slots=1)
    stray = ("someone-elses", 3)
    worker.report(Heartbeat((stray,)))
    (cancel,) = worker.cancels
    assert (cancel.task_run_id, cancel.attempt) == stray
    assert cancel.reason.code is ReasonCode.LEASE_EXPIRED
    worker.report(Heartbeat((stray,)))
    assert len(worker.cancels) == 1, "one cancel per stray attempt"

    execution_id = await rig.submit()
    await idle()
    assert worker.invocations == [], "the stray attempt takes the worker's only slot"
    worker.report(Heartbeat(()))  # it stopped
    await until(lambda: worker.invocations, "dispatched once the slot is free")
    worker.complete(worker.invocations[0])
    assert await rig.state(execution_id) is State.SUCCESS


async def test_an_attempt_rejected_on_reconnect_is_not_dispatched_to_the_worker_still_stopping_it(rig: Rig) -> None:
    # A restart left the task run queued while a worker still runs its (never stored) first attempt.
    execution_id = await rig.submit()
    task_run_id = (await rig.task_run(execution_id)).id
    worker = rig.connect(slots=2, running=[(task_run_id, 1)])
    assert worker.welcome.rejected == ((task_run_id, 1),)
    await idle()
    assert worker.invocations == []

    worker.report(Heartbeat(()))  # it has stopped
    await until(lambda: worker.invocations, "dispatched once the first copy is gone")
    worker.complete(worker.invocations[0])
    assert await rig.state(execution_id) is State.SUCCESS


async def test_a_heartbeat_that_says_what_it_received_judges_only_those_dispatches(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit(task(retry_policy=RETRY))
    (first,) = worker.invocations
    assert first.dispatch == 1

    # Written before the invocation arrived, and read late (after the server stood still): many of them.
    for _ in range(5):
        worker.report(Heartbeat((), received=0))
    assert (await rig.task_run(execution_id)).state is State.RUNNING
    assert worker.held == {first.key}

    worker.report(Heartbeat((first.key,), received=1))
    assert (await rig.task_run(execution_id)).state is State.RUNNING


async def test_a_received_dispatch_left_out_of_one_heartbeat_is_lost_at_once(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit(task(retry_policy=RETRY))
    (first,) = worker.invocations

    worker.report(Heartbeat((), received=first.dispatch))
    lost = await rig.task_run(execution_id)
    assert lost.state is State.WAITING
    assert lost.attempts[0].outcome is AttemptOutcome.LOST


async def test_dispatch_numbers_count_the_invocations_of_one_session(rig: Rig) -> None:
    worker = rig.connect(slots=3)
    for _ in range(3):
        await rig.submit()
    assert [invoked.dispatch for invoked in worker.invocations] == [1, 2, 3]


async def test_a_lost_attempt_is_retried_on_another_worker_waiting_for_its_slot(rig: Rig) -> None:
    deaf = rig.connect("deaf", slots=5)
    execution_id = await rig.submit(task(retry_policy=RETRY))
    (first,) = deaf.invocations
    other = rig.connect("other", slots=1)
    busy_id = await rig.submit()
    (busy,) = other.invocations
    deaf.silent = True  # its heartbeats below list nothing: it never read the invocation

    deaf.report(Heartbeat(()))
    deaf.report(Heartbeat(()))
    assert (await rig.task_run(execution_id)).attempts[0].outcome is AttemptOutcome.LOST
    rig.advance(1)
    await idle()
    assert deaf.invocations == [first], "the retry is not sent back to the worker that lost it"
    assert (await rig.task_run(execution_id)).state is State.PENDING

    other.complete(busy)
    await until(lambda: len(other.invocations) == 2, "the retry sent to the other worker's freed slot")
    assert other.invocations[1].key == (first.task_run.id, 2)
    other.complete(other.invocations[1])
    assert {await rig.state(execution_id), await rig.state(busy_id)} == {State.SUCCESS}


async def test_a_lost_attempt_is_retried_on_a_worker_of_the_same_name_that_is_another_process(rig: Rig) -> None:
    """A fleet under one name: the worker that lost the attempt is its instance, not its name."""
    deaf = rig.connect("fleet", instance_id="i-1", slots=5)
    execution_id = await rig.submit(task(retry_policy=RETRY))
    (first,) = deaf.invocations
    sibling = rig.connect("fleet", instance_id="i-2", slots=1)
    deaf.silent = True

    deaf.report(Heartbeat(()))
    deaf.report(Heartbeat(()))
    rig.advance(1)
    await until(lambda: len(sibling.invocations) == 1, "the retry sent to the sibling")
    assert sibling.invocations[0].key == (first.task_run.id, 2)
    assert deaf.invocations == [first]
    sibling.complete(sibling.invocations[0])
    assert await rig.state(execution_id) is State.SUCCESS


async def test_a_lost_attempt_goes_back_to_its_worker_once_no_other_serves_the_handler(rig: Rig) -> None:
    lossy = rig.connect("lossy", slots=2)
    execution_id = await rig.submit(task(retry_policy=RETRY))
    (first,) = lossy.invocations
    other = rig.connect("other", slots=1)
    await rig.submit()
    lossy.silent = True

    lossy.report(Heartbeat(()))
    lossy.report(Heartbeat(()))
    rig.advance(1)
    await idle()
    assert lossy.invocations == [first], "another worker serves the handler: the retry waits for it"

    other.disconnect()
    await until(lambda: len(lossy.invocations) == 2, "the retry sent back once the other worker is gone")
    assert lossy.invocations[1].key == (first.task_run.id, 2)
    lossy.complete(lossy.invocations[1])
    assert await rig.state(execution_id) is State.SUCCESS
