"""Dispatch: a submitted task reaches a worker with a free slot, never more than its slots, round robin."""

from __future__ import annotations

from taskwire.server.domain import AttemptOutcome, State
from tests.unit.engine.support import OUTPUT, Rig, task, until


async def test_a_submit_is_dispatched_and_its_completion_ends_the_execution(rig: Rig) -> None:
    worker = rig.connect(slots=2)
    execution_id = await rig.submit(task(timeout=None))
    (invoked,) = worker.invocations
    assert invoked.attempt.number == 1
    assert invoked.attempt.worker_id == "w1"
    assert invoked.task_run.execution_id == execution_id
    assert worker.held == {invoked.key}
    assert await rig.state(execution_id) is State.RUNNING

    worker.complete(invoked)
    assert worker.held == set()
    snapshot = await rig.snapshot(execution_id)
    assert snapshot.execution.state is State.SUCCESS
    (attempt,) = snapshot.task_runs[0].attempts
    assert (attempt.outcome, attempt.output) == (AttemptOutcome.SUCCEEDED, OUTPUT)


async def test_a_worker_is_never_sent_more_than_its_slots(rig: Rig) -> None:
    worker = rig.connect(slots=2)
    await rig.submit(*(task(task_id=f"t{n}") for n in range(5)))
    assert len(worker.invocations) == 2
    assert rig.engine.stats().in_flight == 2
    assert rig.engine.stats().handlers[0].pending == 3

    worker.complete(worker.invocations[0])
    await until(lambda: len(worker.invocations) == 3, "the freed slot taken")
    assert len(worker.held) == 2
    for invoked in worker.invocations[1:]:
        worker.complete(invoked)
    await until(lambda: len(worker.invocations) == 5, "every task dispatched")
    assert len(worker.held) == 2, "two running at most"


async def test_work_queued_before_any_worker_goes_to_the_first_that_connects(rig: Rig) -> None:
    execution_id = await rig.submit(task("resize"))
    other = rig.connect("other", handlers=("echo",))
    resizer = rig.connect("resizer", handlers=("resize",))
    await until(lambda: resizer.invocations, "the resize task dispatched")
    assert other.invocations == []
    assert resizer.invocations[0].task_run.execution_id == execution_id


async def test_workers_of_a_handler_take_turns(rig: Rig) -> None:
    first = rig.connect("first", slots=3)
    second = rig.connect("second", slots=3)
    await until(lambda: rig.engine.stats().free_slots == 6)
    await rig.submit(*(task(task_id=f"t{n}") for n in range(4)))
    assert (len(first.invocations), len(second.invocations)) == (2, 2)


async def test_a_task_that_arrives_alone_goes_to_the_least_busy_worker(rig: Rig) -> None:
    big = rig.connect("big", slots=10)
    small = rig.connect("small", slots=2)
    await until(lambda: rig.engine.stats().free_slots == 12)
    await rig.submit(task(task_id="first"))
    (first,) = big.invocations
    await rig.submit(task(task_id="second"))
    assert len(small.invocations) == 1, "an idle worker before one with a task running (9 of 10 slots free)"
    await rig.submit(task(task_id="third"))
    assert len(big.invocations) == 2, "9 of 10 slots free before 1 of 2"
    big.complete(first)
    await rig.submit(task(task_id="fourth"))
    assert len(big.invocations) == 3, "still the least busy: 9 of 10 free"
    assert (len(big.held), len(small.held)) == (2, 1)


async def test_short_tasks_one_at_a_time_keep_to_one_idle_worker(rig: Rig) -> None:
    workers = [rig.connect(name, slots=2) for name in ("first", "second", "third")]
    await until(lambda: rig.engine.stats().free_slots == 6)
    served: list[str] = []
    for n in range(4):
        await rig.submit(task(task_id=f"t{n}"))
        (worker,) = (worker for worker in workers if worker.held)
        (invoked,) = worker.invocations[-1:]
        served.append(invoked.attempt.worker_id)
        worker.complete(invoked)  # every worker is idle again before the next submit
    assert len(set(served)) == 1, "equally idle workers keep their order: the one that ran the last task stays warm"


async def test_a_draining_worker_gets_nothing_new(rig: Rig) -> None:
    worker = rig.connect(slots=2)
    worker.drain()
    await rig.submit()
    assert worker.invocations == []
    assert rig.engine.stats().free_slots == 0


async def test_a_task_run_cancelled_while_queued_is_never_dispatched(rig: Rig) -> None:
    cancelled = await rig.submit()
    kept = await rig.submit()
    snapshot, already_terminal = await rig.engine.cancel(cancelled, "not needed")
    assert (snapshot.execution.state, already_terminal) == (State.CANCELLED, False)
    assert rig.engine.stats().queue.size == 1
    worker = rig.connect(slots=2)
    await until(lambda: worker.invocations, "the kept task dispatched")
    assert [invoked.task_run.execution_id for invoked in worker.invocations] == [kept]
