"""Group commit of schedules: the latest version staged in a window is written, a delete wins over an earlier
save of the same name, a schedule created in the window is written new (the others replace a stored one only),
and a fire's execution commits with the schedule that records it."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from taskwire.server.domain import ExecutionSpec, Schedule, ScheduleSpec, TaskSpec
from taskwire.server.engine._bus import EventBus
from taskwire.server.store import Committer
from tests.unit.store.records import T0, pending_execution
from tests.unit.store.test_group_commit import RecordingStore


def schedule(name: str, fired: int = 0) -> Schedule:
    spec = ScheduleSpec(name=name, cron="* * * * *", execution=ExecutionSpec(tasks=(TaskSpec("echo"),)))
    return Schedule(spec=spec, created_at=T0, updated_at=T0, cursor=T0, fired=fired)


async def test_one_commit_carries_the_latest_schedule_and_the_fire_it_records() -> None:
    store = RecordingStore()
    committer = Committer(store=store, bus=EventBus(), on_fatal=lambda error: None)  # type: ignore[arg-type]
    committer.start()
    fire = pending_execution(key="schedule:a:2026-01-02T03:05:00Z")

    committer.stage_schedule(schedule("a"))
    committer.stage_new(fire)
    committer.stage_schedule(replace(schedule("a", fired=1), running=(fire.execution.id,)))
    committer.stage_schedule(schedule("b"), new=True)
    committer.stage_schedule_delete("b")
    committer.stage_schedule(schedule("c"), new=True)
    committer.stage_schedule(schedule("c", fired=1))
    store.release.set()
    await asyncio.wait_for(committer.durable(), timeout=5)

    [batch] = store.batches
    assert [new.execution.id for new in batch.new_executions] == [fire.execution.id]
    assert [(s.name, s.fired, s.running) for s in batch.schedule_updates] == [("a", 1, (fire.execution.id,))]
    assert [(s.name, s.fired) for s in batch.schedules] == [("c", 1)]  # new in this window, then updated
    assert batch.deleted_schedules == ["b"]
    assert batch.records == 1 + len(fire.task_runs) + 3
    await committer.close()
