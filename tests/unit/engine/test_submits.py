"""Submits: durable before answered, idempotent by key, admitted to a bounded queue."""

from __future__ import annotations

import asyncio

import pytest

from taskwire.server.domain import (
    RERUN_OF,
    ExecutionSpec,
    IdempotencyConflict,
    QueueFull,
    ShuttingDown,
    State,
    ValidationError,
)
from taskwire.server.engine import SubmitItem
from tests.unit.engine.support import Rig, task, until


def spec(key: str = "", handler: str = "echo") -> ExecutionSpec:
    return ExecutionSpec(tasks=(task(handler),), idempotency_key=key)


async def test_a_submit_is_in_the_store_when_it_returns(rig: Rig) -> None:
    result = await rig.engine.submit(spec(), fingerprint="", wait_for_room=False, timeout_s=None)
    assert not result.deduplicated
    stored = await rig.store.get_execution(result.snapshot.execution.id)
    assert stored is not None
    assert stored.execution.state is State.PENDING


async def test_the_same_key_and_request_return_the_first_execution(rig: Rig) -> None:
    first = await rig.engine.submit(spec("k"), fingerprint="f1", wait_for_room=False, timeout_s=None)
    again = await rig.engine.submit(spec("k"), fingerprint="f1", wait_for_room=False, timeout_s=None)
    assert again.deduplicated
    assert again.snapshot.execution.id == first.snapshot.execution.id
    assert rig.engine.stats().queue.size == 1, "the repeat reserved no room"
    with pytest.raises(IdempotencyConflict):
        await rig.engine.submit(spec("k"), fingerprint="f2", wait_for_room=False, timeout_s=None)


async def test_a_submit_that_gives_up_on_its_commit_leaves_the_others_waiting_on_it(rig: Rig) -> None:
    # A caller's deadline passes while the store is slow: its own wait ends, and the submits waiting on the
    # same commit, and a retry of its key, still get their answers once the commit is durable.
    release = rig.hold_commits()
    impatient = asyncio.ensure_future(
        rig.engine.submit(spec("k"), fingerprint="f1", wait_for_room=False, timeout_s=None)
    )
    patient = asyncio.ensure_future(rig.engine.submit(spec(), fingerprint="", wait_for_room=False, timeout_s=None))
    await until(lambda: rig.engine.stats().queue.size == 2, "both submits staged")
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    retry = asyncio.ensure_future(rig.engine.submit(spec("k"), fingerprint="f1", wait_for_room=False, timeout_s=None))
    release.set()
    made, again = await asyncio.wait_for(asyncio.gather(patient, retry), timeout=5)
    assert not made.deduplicated
    assert again.deduplicated
    assert (await rig.store.get_execution(again.snapshot.execution.id)) is not None


async def test_a_key_is_answered_from_the_store_once_its_execution_left_memory(rig: Rig) -> None:
    worker = rig.connect()
    first = await rig.engine.submit(spec("k"), fingerprint="f1", wait_for_room=False, timeout_s=None)
    worker.complete(worker.invocations[0])
    await rig.engine.flush()  # its end is durable: the execution leaves memory
    again = await rig.engine.submit(spec("k"), fingerprint="f1", wait_for_room=False, timeout_s=None)
    assert again.deduplicated
    assert again.snapshot.execution.id == first.snapshot.execution.id
    assert again.snapshot.execution.state is State.SUCCESS
    assert len(worker.invocations) == 1


async def test_a_batch_deduplicates_within_itself_and_against_earlier_submits(rig: Rig) -> None:
    earlier = await rig.engine.submit(spec("old"), fingerprint="o", wait_for_room=False, timeout_s=None)
    items = [
        SubmitItem(spec("new"), "n"),
        SubmitItem(spec("new"), "n"),
        SubmitItem(spec("new"), "other"),
        SubmitItem(spec("old"), "o"),
        SubmitItem(None, "", ValidationError("executions[4]", "broken")),
    ]
    results = await rig.engine.submit_many(items, wait_for_room=False, timeout_s=None)
    assert results[0].execution_id
    assert not results[0].deduplicated
    assert (results[1].execution_id, results[1].deduplicated) == (results[0].execution_id, True)
    assert isinstance(results[2].error, IdempotencyConflict)
    assert (results[3].execution_id, results[3].deduplicated) == (earlier.snapshot.execution.id, True)
    assert isinstance(results[4].error, ValidationError)
    assert rig.engine.stats().queue.size == 2


async def test_a_full_queue_refuses_a_fail_fast_submit(rig: Rig) -> None:
    await rig.restart_with(queue_capacity=2)
    await rig.submit(task(task_id="a"), task(task_id="b"))
    with pytest.raises(QueueFull):
        await rig.submit()
    worker = rig.connect()
    await until(lambda: worker.invocations, "a dispatch, which frees room")
    assert rig.engine.stats().queue.size == 1
    await rig.submit()


async def test_after_stop_accepting_submits_are_refused(rig: Rig) -> None:
    rig.engine.stop_accepting()
    with pytest.raises(ShuttingDown):
        await rig.submit()


async def test_submits_made_together_are_each_accepted_or_refused_on_their_own(rig: Rig) -> None:
    await rig.restart_with(queue_capacity=4)
    commits = rig.count_commits()
    bad = ExecutionSpec(tasks=())
    two = ExecutionSpec(tasks=(task(task_id="a"), task(task_id="b")))
    three = ExecutionSpec(tasks=(task(task_id="a"), task(task_id="b"), task(task_id="c")))
    results = await rig.engine.submit_each([spec(), bad, two, three, spec()], submitted_by="ann")
    first, refused, second, full, third = results
    assert isinstance(refused, ValidationError)
    assert refused.field == "execution.tasks"
    assert isinstance(full, QueueFull), "room for 4 task runs: 3 more do not fit after 3, one more does"
    assert rig.engine.stats().queue.size == 4
    assert commits == [1], "one commit for all of them, before any returned"
    for result in (first, second, third):
        assert not isinstance(result, Exception)
        assert not result.deduplicated
        stored = await rig.store.get_execution(result.snapshot.execution.id)
        assert stored is not None
        assert stored.execution.submitted_by == "ann"


async def test_submits_made_together_are_dispatched_in_one_pass(rig: Rig) -> None:
    worker = rig.connect(slots=3)
    results = await rig.engine.submit_each([spec(), spec(), spec()])
    ids = {result.snapshot.execution.id for result in results if not isinstance(result, Exception)}
    assert {invoked.task_run.execution_id for invoked in worker.invocations} == ids, "dispatched before answered"


async def test_submits_made_together_take_no_idempotency_key(rig: Rig) -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        await rig.engine.submit_each([spec(), spec("k")])
    assert rig.engine.stats().queue.size == 0


async def test_submits_made_together_are_refused_while_shutting_down(rig: Rig) -> None:
    rig.engine.stop_accepting()
    with pytest.raises(ShuttingDown):
        await rig.engine.submit_each([spec()])


async def test_an_execution_with_as_many_labels_as_allowed_can_be_run_again(rig: Rig) -> None:
    worker = rig.connect()
    labels = {f"label-{number}": "x" for number in range(rig.config.limits.max_metadata_entries)}
    execution_id = await rig.submit(metadata=labels)
    worker.complete(worker.invocations[0])
    await rig.engine.flush()
    again = await rig.engine.rerun(execution_id, only_failed=False)
    assert again.snapshot.execution.metadata == {**labels, RERUN_OF: execution_id}
