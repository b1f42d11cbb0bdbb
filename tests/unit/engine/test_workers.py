"""Worker sessions: leases that expire, attempts adopted on reconnect, reports fenced by holder and attempt."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from taskwire.server.domain import AttemptOutcome, ReasonCode, RetryPolicy, ShuttingDown, State, Superseded
from taskwire.server.engine import WorkerHello
from tests.unit.engine.support import CONFIG, Drained, FakeLink, FakeWorker, Rig, ToldGoingAway, idle, task, until

LEASE_S = CONFIG.lease_timeout.total_seconds()
RETRY_ONCE = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=1))
CAME_BACK_WITHOUT = "worker {} reconnected without it: its report was lost with the stream or the server"


async def retried_after_the_loss(
    rig: Rig, execution_id: str, lost_key: tuple[str, int], why: str, *workers: FakeWorker
) -> None:
    """The attempt `lost_key` ended LOST, its error saying `why`, and its task run waits out the backoff; the
    retry goes to one of `workers`, which completes it."""
    lost = await rig.task_run(execution_id)
    assert lost.state is State.WAITING
    assert lost.reason is not None
    assert lost.reason.code is ReasonCode.RETRY_BACKOFF
    assert lost.attempts[0].outcome is AttemptOutcome.LOST
    assert lost.attempts[0].error is not None
    assert lost.attempts[0].error.message == why
    rig.advance(1)  # the backoff
    await until(lambda: any(worker.invocations for worker in workers), "the retry dispatched")
    ((worker, retry),) = [(worker, invoked) for worker in workers for invoked in worker.invocations]
    assert retry.key == (lost_key[0], lost_key[1] + 1)
    worker.complete(retry)
    assert await rig.state(execution_id) is State.SUCCESS


async def test_a_silent_worker_loses_its_lease_and_the_attempt_is_retried(rig: Rig) -> None:
    silent = rig.connect("silent")
    silent.silent = True
    execution_id = await rig.submit(task(retry_policy=RETRY_ONCE))
    (first,) = silent.invocations

    rig.advance(LEASE_S - 0.1)
    assert (await rig.task_run(execution_id)).state is State.RUNNING
    rig.advance(0.1)
    assert silent.link.closed
    assert rig.engine.workers() == []
    await retried_after_the_loss(
        rig, execution_id, first.key, "worker silent stopped heartbeating", rig.connect("healthy")
    )


async def test_a_lost_attempt_without_retries_left_fails_the_execution(rig: Rig) -> None:
    rig.connect().silent = True
    execution_id = await rig.submit(task(retry_policy=RetryPolicy(max_infrastructure_retries=0)))
    rig.advance(LEASE_S)
    snapshot = await rig.snapshot(execution_id)
    assert snapshot.execution.state is State.FAILED
    assert snapshot.task_runs[0].reason is not None
    assert snapshot.task_runs[0].reason.code is ReasonCode.WORKER_LOST


async def test_heartbeats_keep_the_lease(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit()
    for _ in range(20):
        rig.advance(CONFIG.heartbeat_interval.total_seconds())
        worker.heartbeat()
    assert (await rig.task_run(execution_id)).state is State.RUNNING
    assert rig.engine.workers() == [worker.session]
    worker.silent = True
    rig.advance(LEASE_S)
    lost = await rig.task_run(execution_id)
    assert lost.state is State.WAITING, "lost with its worker: retried (not the handler's fault)"
    assert lost.attempts[0].outcome is AttemptOutcome.LOST


async def test_a_worker_that_reconnects_adopts_its_running_attempt(rig: Rig) -> None:
    before = rig.connect("w1", instance_id="i-1")
    execution_id = await rig.submit()
    (invoked,) = before.invocations
    before.disconnect()
    assert before.link.closed
    rig.advance(LEASE_S / 2)

    after = rig.connect("w1", instance_id="i-1", running=[invoked.key])
    assert after.welcome.adopted == (invoked.key,)
    assert after.welcome.rejected == ()
    assert after.held == {invoked.key}
    assert before.held == set()
    rig.advance(LEASE_S / 2 + 1)  # the old session's lease would have run out by now
    after.complete(invoked)
    assert await rig.state(execution_id) is State.SUCCESS


async def test_a_hello_read_before_the_connected_session_of_its_instance_does_not_end_it(rig: Rig) -> None:
    """On a replica a hello waits while its attempts are handed over; the worker may give that stream up and
    connect again meanwhile. The stale hello, connecting last, is refused rather than ending the newer session."""
    stale = rig.engine.hello_read()
    newer = rig.connect("w1", instance_id="i-1", identity="team")
    hello = WorkerHello(name="w1", instance_id="i-1", handlers=frozenset({"echo"}), slots=1)
    with pytest.raises(Superseded, match=f"a newer stream of it is connected \\(session {newer.session.session_id}\\)"):
        rig.engine.connect_worker(hello, FakeLink(), identity="team", ticket=stale)
    assert newer.session.connected
    assert rig.engine.workers() == [newer.session]

    other = rig.connect("w2", instance_id="i-2", identity="team")  # other instances are not its business
    third, _ = rig.engine.connect_worker(replace(hello, instance_id="i-3"), FakeLink(), identity="team", ticket=stale)
    assert other.session.connected
    later = rig.connect("w1", instance_id="i-1", identity="team")  # a hello read later still ends it
    assert {session.session_id for session in rig.engine.workers()} == {
        other.session.session_id,
        later.session.session_id,
        third.session_id,
    }
    assert newer.link.closed


async def test_a_worker_that_reconnects_while_its_old_stream_looks_open_gets_no_work_on_that_stream(
    rig: Rig,
) -> None:
    """A half-open stream: the worker noticed it was dead and came back, the server has not noticed yet. A worker
    instance has one stream at a time, so its hello ends the old one: no work goes down a stream no one reads."""
    before = rig.connect("w1", instance_id="i-1", slots=4)
    first = await rig.submit()
    (invoked,) = before.invocations
    after = rig.connect("w1", instance_id="i-1", slots=4, running=[invoked.key])
    assert after.welcome.adopted == (invoked.key,)
    assert before.link.closed
    assert rig.engine.workers() == [after.session]
    later = [await rig.submit() for _ in range(3)]
    await until(lambda: len(after.invocations) == 3, "the new work dispatched on the new stream")
    assert len(before.invocations) == 1
    after.complete(invoked)
    for execution_id, invocation in zip(later, after.invocations, strict=True):
        after.complete(invocation)
        assert await rig.state(execution_id) is State.SUCCESS
    assert await rig.state(first) is State.SUCCESS


async def test_a_hello_naming_another_credentials_instance_leaves_its_session_alone(rig: Rig) -> None:
    holder = rig.connect("w1", instance_id="i-1", identity="worker-a")
    intruder = rig.connect("w1", instance_id="i-1", identity="worker-b")
    assert not holder.link.closed
    assert set(rig.engine.workers()) == {holder.session, intruder.session}


async def test_a_worker_that_comes_back_without_its_attempt_loses_it_at_once(rig: Rig) -> None:
    before = rig.connect("w1", instance_id="i-1")
    execution_id = await rig.submit(task(retry_policy=RETRY_ONCE))
    (invoked,) = before.invocations
    before.disconnect()  # its report went down the broken stream, or the invocation never arrived

    after = rig.connect("w1", instance_id="i-1", running=[])
    await retried_after_the_loss(
        rig, execution_id, invoked.key, CAME_BACK_WITHOUT.format("w1"), after
    )  # not a lease later


async def test_another_workers_hello_leaves_an_attempt_it_does_not_list_alone(rig: Rig) -> None:
    before = rig.connect("w1", instance_id="i-1")
    execution_id = await rig.submit()
    (invoked,) = before.invocations
    before.disconnect()
    rig.connect("w2", instance_id="i-2", running=[])
    assert (await rig.task_run(execution_id)).state is State.RUNNING
    returning = rig.connect("w1", instance_id="i-1", running=[invoked.key])
    assert returning.welcome.adopted == (invoked.key,)


async def test_another_worker_cannot_adopt_an_attempt_it_does_not_hold(rig: Rig) -> None:
    holder = rig.connect("w1", instance_id="i-1")
    await rig.submit()
    (invoked,) = holder.invocations
    intruder = rig.connect("w2", instance_id="i-2", running=[invoked.key, ("no-such-run", 1)])
    assert intruder.welcome.adopted == ()
    assert intruder.welcome.rejected == (invoked.key, ("no-such-run", 1))
    assert holder.held == {invoked.key}


async def test_after_a_restart_running_attempts_wait_for_their_worker_instance(rig: Rig) -> None:
    worker = rig.connect("w1", instance_id="i-1")
    execution_id = await rig.submit()
    (invoked,) = worker.invocations
    await rig.engine.flush()
    await rig.restart()

    stranger = rig.connect("w2", instance_id="i-2", running=[invoked.key])
    assert stranger.welcome.rejected == (invoked.key,)
    namesake = rig.connect("w1", instance_id="i-1b", running=[invoked.key])
    assert namesake.welcome.rejected == (invoked.key,), "another process under the same name"
    returning = rig.connect("w1", instance_id="i-1", running=[invoked.key])
    assert returning.welcome.adopted == (invoked.key,)
    returning.complete(invoked)
    assert await rig.state(execution_id) is State.SUCCESS


async def test_after_a_restart_workers_sharing_a_name_keep_their_own_attempts(rig: Rig) -> None:
    """A fleet started with one `--name`: each hello after a restart speaks for its own process only."""
    first = rig.connect("fleet", instance_id="i-1", slots=1)
    second = rig.connect("fleet", instance_id="i-2", slots=1)
    one, other = await rig.submit(task(retry_policy=RETRY_ONCE)), await rig.submit(task(retry_policy=RETRY_ONCE))
    ((of_first,), (of_second,)) = first.invocations, second.invocations
    await rig.engine.flush()
    await rig.restart()

    back = rig.connect("fleet", instance_id="i-1", slots=1, running=[of_first.key])
    assert back.welcome.adopted == (of_first.key,)
    running = [await rig.task_run(execution_id) for execution_id in (one, other)]
    assert [t.state for t in running] == [State.RUNNING, State.RUNNING], "i-1's hello does not speak for i-2"
    assert [len(t.attempts) for t in running] == [1, 1]
    again = rig.connect("fleet", instance_id="i-2", slots=1, running=[of_second.key])
    assert again.welcome.adopted == (of_second.key,)
    back.complete(of_first)
    again.complete(of_second)
    assert [await rig.state(one), await rig.state(other)] == [State.SUCCESS, State.SUCCESS]


async def test_after_a_restart_an_attempt_stored_without_its_instance_goes_back_by_name(rig: Rig) -> None:
    worker = rig.connect("w1", instance_id="i-1")
    execution_id = await rig.submit()
    (invoked,) = worker.invocations
    await rig.engine.flush()
    rig.store_attempts_without_instance()  # as stored before attempts kept their worker's instance
    await rig.restart()

    returning = rig.connect("w1", instance_id="i-1b", running=[invoked.key])
    assert returning.welcome.adopted == (invoked.key,)
    returning.complete(invoked)
    assert await rig.state(execution_id) is State.SUCCESS


async def test_after_a_restart_a_worker_whose_hello_leaves_its_attempt_out_loses_it_at_once(rig: Rig) -> None:
    worker = rig.connect("w1", instance_id="i-1")
    execution_id = await rig.submit(task(retry_policy=RETRY_ONCE))
    (invoked,) = worker.invocations
    await rig.engine.flush()
    await rig.restart()  # its report, if it sent one, died with the server

    stranger = rig.connect("w2", instance_id="i-2", running=[])
    assert (await rig.task_run(execution_id)).state is State.RUNNING, "not w2's to give up"
    returning = rig.connect("w1", instance_id="i-1", running=[])
    await retried_after_the_loss(rig, execution_id, invoked.key, CAME_BACK_WITHOUT.format("w1"), stranger, returning)


async def test_after_a_restart_attempts_nobody_reclaims_are_lost_with_the_lease(rig: Rig) -> None:
    rig.connect("w1")
    execution_id = await rig.submit(task(retry_policy=RETRY_ONCE))
    await rig.engine.flush()
    await rig.restart()
    rig.advance(LEASE_S)
    task_run = await rig.task_run(execution_id)
    assert task_run.state is State.WAITING
    assert task_run.attempts[0].outcome is AttemptOutcome.LOST


async def test_a_report_from_a_session_that_does_not_hold_the_attempt_is_ignored(rig: Rig) -> None:
    holder = rig.connect("w1")
    other = rig.connect("w2")
    execution_id = await rig.submit()
    ((invoked, sender),) = [(i, w) for w in (holder, other) for i in w.invocations]
    bystander = other if sender is holder else holder
    bystander.complete(invoked)
    assert await rig.state(execution_id) is State.RUNNING
    assert sender.held == {invoked.key}
    sender.complete(invoked)
    assert await rig.state(execution_id) is State.SUCCESS


async def test_a_report_for_a_stale_attempt_changes_nothing(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit(task(retry_policy=RETRY_ONCE))
    (first,) = worker.invocations
    worker.fail(first)
    rig.advance(1)
    await until(lambda: len(worker.invocations) == 2, "the retry dispatched")
    second = worker.invocations[1]
    worker.complete(first)  # late, and for attempt 1
    worker.log(first, "a line from the past")
    worker.progress(first, 0.5)
    task_run = await rig.task_run(execution_id)
    assert task_run.state is State.RUNNING
    assert task_run.current_attempt is not None
    assert task_run.current_attempt.number == 2
    assert task_run.progress is None
    worker.complete(second)
    assert await rig.state(execution_id) is State.SUCCESS
    worker.complete(second)  # a replay of the last report: a no-op
    assert await rig.state(execution_id) is State.SUCCESS


async def test_a_server_going_away_keeps_the_work_and_waits_for_its_workers_to_hang_up(rig: Rig) -> None:
    leaving = rig.connect("leaving", instance_id="i-leaving")
    staying = rig.connect("staying")
    execution_id = await rig.submit()
    (invoked,) = leaving.invocations + staying.invocations
    holder = leaving if leaving.invocations else staying
    grace = timedelta(seconds=20)  # shorter than the lease: the staying worker keeps its session
    within = timedelta(seconds=1)
    releasing = asyncio.ensure_future(rig.engine.release_workers(grace, reconnect_within=within))
    await until(lambda: ToldGoingAway(within, "the server is shutting down") in leaving.link.sent, "told")
    assert ToldGoingAway(within, "the server is shutting down") in staying.link.sent
    # No Drain: the workers are not asked to stop their work, and the attempt stays theirs.
    assert not any(isinstance(sent, Drained) for sent in leaving.link.sent + staying.link.sent)
    assert not leaving.session.draining
    assert holder.held == {invoked.key}
    # Nothing new is dispatched, and no new session is opened (the worker comes back to the next server).
    await rig.submit()
    await idle()
    assert len(leaving.invocations + staying.invocations) == 1
    with pytest.raises(ShuttingDown):
        rig.connect("late")
    # A report written before the worker hung up is applied.
    holder.complete(invoked)
    assert await rig.state(execution_id) is State.SUCCESS
    leaving.disconnect()
    await idle()
    assert not releasing.done(), "one worker is still connected"
    rig.advance(grace.total_seconds() - 0.1)
    await idle()
    assert not releasing.done()
    rig.advance(0.1)
    await releasing
    assert staying.session.connected
