"""Concurrency keys: never more attempts of a key than its limit, counting an attempt until the server knows
it ended; the rest wait WAITING(CONCURRENCY_LIMIT) and queue in order as places free."""

from __future__ import annotations

from datetime import timedelta

from taskwire.server.domain import ReasonCode, RetryPolicy, State, TaskSpec, TaskSucceeded
from taskwire.server.engine import AttemptEnd
from tests.unit.engine.support import CONFIG, OUTPUT, FakeWorker, Rig, idle, task, until

LEASE_S = CONFIG.lease_timeout.total_seconds()


def keyed(limit: int = 2, key: str = "customer-42", **fields: object) -> TaskSpec:
    return task(concurrency_key=key, concurrency_limit=limit, **fields)  # type: ignore[arg-type]


def running(*workers: FakeWorker) -> int:
    """Attempts of the workers that the server still counts (held: dispatched, end not reported)."""
    return sum(len(worker.held) for worker in workers)


async def test_at_most_the_limit_run_and_the_rest_wait_with_their_reason_then_go_in_order(rig: Rig) -> None:
    worker = rig.connect(slots=8)
    ids = [await rig.submit(keyed(2), name=f"t{n}") for n in range(6)]
    assert len(worker.invocations) == 2
    assert [i.task_run.execution_id for i in worker.invocations] == ids[:2]
    waiting = await rig.task_run(ids[2])
    assert waiting.state is State.WAITING
    assert waiting.reason is not None
    assert waiting.reason.code is ReasonCode.CONCURRENCY_LIMIT
    assert "concurrency key 'customer-42' is full: 2 running and 0 queued of a limit of 2" in waiting.reason.message
    (figures,) = rig.engine.stats().concurrency_keys
    assert (figures.key, figures.limit, figures.running, figures.queued, figures.waiting) == ("customer-42", 2, 2, 0, 4)

    for done in range(4):
        worker.complete(worker.invocations[done])
        await until(lambda: len(worker.invocations) == 3 + done, "the next of the key dispatched")  # noqa: B023
        assert running(worker) == 2
    assert [i.task_run.execution_id for i in worker.invocations] == ids
    assert [await rig.state(i) for i in ids] == [State.SUCCESS] * 4 + [State.RUNNING] * 2


async def test_the_limit_holds_across_workers_and_other_keys_are_not_held_back(rig: Rig) -> None:
    first, second = rig.connect("first", slots=4), rig.connect("second", slots=4)
    await until(lambda: rig.engine.stats().free_slots == 8)
    for _ in range(5):
        await rig.submit(keyed(3))
    other = await rig.submit(keyed(1, key="customer-7"))
    plain = await rig.submit()
    assert running(first, second) == 5  # 3 of customer-42, 1 of customer-7, the task without a key
    assert await rig.state(other) is State.RUNNING
    assert await rig.state(plain) is State.RUNNING


async def test_a_cancelled_attempt_counts_until_its_worker_confirms(rig: Rig) -> None:
    worker = rig.connect(slots=4)
    first = await rig.submit(keyed(1))
    second = await rig.submit(keyed(1))
    await rig.engine.cancel(first, "stop")
    (cancel,) = worker.cancels
    await idle()
    assert len(worker.invocations) == 1, "a place was given while the cancelled attempt may still run"
    assert (await rig.task_run(second)).state is State.WAITING
    worker.acknowledge(cancel)
    await until(lambda: len(worker.invocations) == 2, "the next of the key dispatched")
    assert worker.invocations[1].task_run.execution_id == second


async def test_an_attempt_fenced_by_its_timeout_counts_until_its_worker_reports(rig: Rig) -> None:
    worker = rig.connect(slots=4)
    timed = await rig.submit(keyed(1, timeout=timedelta(seconds=1)))
    after = await rig.submit(keyed(1))
    rig.advance(1)  # the server ends the attempt TIMED_OUT and asks the worker to stop it
    assert (await rig.task_run(timed)).state is State.FAILED
    await idle()
    assert len(worker.invocations) == 1, "a place was given while the timed-out handler may still run"
    worker.time_out(worker.invocations[0])  # the worker says it stopped
    await until(lambda: len(worker.invocations) == 2, "the next of the key dispatched")
    assert worker.invocations[1].task_run.execution_id == after


async def test_a_lost_attempt_frees_its_place_and_its_retry_queues_behind_the_waiting(rig: Rig) -> None:
    lost = rig.connect("lost", slots=4)
    policy = RetryPolicy(max_attempts=1, initial_interval=timedelta(seconds=1))
    retried = await rig.submit(keyed(1, retry_policy=policy))
    waiting = await rig.submit(keyed(1))
    lost.silent = True
    healthy = rig.connect("healthy", slots=4)
    rig.advance(LEASE_S)  # the lease runs out: the attempt is lost, retried after a backoff
    await until(lambda: len(healthy.invocations) == 1, "the waiting task given the freed place")
    assert healthy.invocations[0].task_run.execution_id == waiting
    rig.advance(1)  # the retry is due, and the key is full
    run = await rig.task_run(retried)
    assert (run.state, run.reason.code if run.reason else None) == (State.WAITING, ReasonCode.CONCURRENCY_LIMIT)
    assert running(healthy) == 1
    healthy.complete(healthy.invocations[0])
    await until(lambda: len(healthy.invocations) == 2, "the retry dispatched")
    assert healthy.invocations[1].key == (run.id, 2)


async def test_a_task_cancelled_while_waiting_gives_its_turn_to_the_next(rig: Rig) -> None:
    worker = rig.connect(slots=4)
    await rig.submit(keyed(1))
    skipped = await rig.submit(keyed(1))
    nxt = await rig.submit(keyed(1))
    await rig.engine.cancel(skipped, "not needed")
    assert await rig.state(skipped) is State.CANCELLED
    worker.complete(worker.invocations[0])
    await until(lambda: len(worker.invocations) == 2, "the next of the key dispatched")
    assert worker.invocations[1].task_run.execution_id == nxt
    assert await rig.state(skipped) is State.CANCELLED


async def test_the_counts_come_back_after_a_restart(rig: Rig) -> None:
    worker = rig.connect(slots=4)
    first = await rig.submit(keyed(1))
    second = await rig.submit(keyed(1))
    key = worker.invocations[0].key
    await rig.engine.flush()
    await rig.restart()
    back = rig.connect(slots=4, running=[key])  # the worker still runs the first and is adopted
    await idle()
    assert back.invocations == [], "a place was given while the adopted attempt runs"
    assert (await rig.task_run(second)).state is State.WAITING
    back.report(AttemptEnd(key[0], TaskSucceeded(key[1], OUTPUT)))
    await until(lambda: len(back.invocations) == 1, "the waiting one dispatched")
    assert back.invocations[0].task_run.execution_id == second
    assert await rig.state(first) is State.SUCCESS
