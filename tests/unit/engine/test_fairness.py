"""Fairness keys in the engine: within a priority, a handler's queue takes its tenants in turns."""

from __future__ import annotations

from tests.unit.engine.support import Rig, task, until


async def test_a_small_tenant_is_not_stuck_behind_a_big_backlog(rig: Rig) -> None:
    big = [await rig.submit(task(fairness_key="big")) for _ in range(200)]
    small = [await rig.submit(task(fairness_key="small")) for _ in range(3)]
    worker = rig.connect(slots=2)
    for done in range(6):
        await until(lambda: len(worker.invocations) > done, "the next dispatch")  # noqa: B023
        worker.complete(worker.invocations[done])
    await until(lambda: len(worker.invocations) >= 7, "the next dispatch")
    first_six = [invoked.task_run.execution_id for invoked in worker.invocations[:6]]
    assert set(small) <= set(first_six), "the small tenant waited behind the big one's backlog"
    assert first_six[0::2] == big[:3]  # the big tenant keeps its own order, one turn in two


async def test_priority_comes_before_turns(rig: Rig) -> None:
    for _ in range(5):
        await rig.submit(task(fairness_key="a", priority=8))
    low = await rig.submit(task(fairness_key="b", priority=2))
    worker = rig.connect(slots=1)
    for done in range(5):
        await until(lambda: len(worker.invocations) > done, "the next dispatch")  # noqa: B023
        assert worker.invocations[done].task_run.execution_id != low
        worker.complete(worker.invocations[done])
    await until(lambda: len(worker.invocations) == 6, "the low one")
    assert worker.invocations[5].task_run.execution_id == low
