"""Schedules in the engine, on a manual clock: fires on time, catch-up after downtime, overlap policies,
pause, resume, trigger and delete, and the refusals of bad input."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from taskwire.server.domain import (
    FIRE_TIME_LABEL,
    SCHEDULE_LABEL,
    AlreadyExists,
    ExecutionSpec,
    NotFound,
    OverlapPolicy,
    Schedule,
    ScheduleSpec,
    State,
    ValidationError,
)
from taskwire.server.store import ExecutionSnapshot, WriteBatch
from tests.unit.engine.support import Rig, idle, task, until

START = datetime(2030, 1, 1, tzinfo=UTC)  # the manual clock's wall time at start


def every_10s(name: str = "tick", **fields: object) -> ScheduleSpec:
    return ScheduleSpec(name=name, cron="*/10 * * * * *", execution=ExecutionSpec(tasks=(task(),)), **fields)  # type: ignore[arg-type]


async def fired(rig: Rig, name: str = "tick") -> list[ExecutionSnapshot]:
    """The executions the schedule started, oldest fire first."""
    await idle()
    await rig.engine.flush()
    page = await rig.engine.list_executions(states=[], handler="", page_size=1000, page_token="")
    mine = [s for s in page.snapshots if s.execution.metadata.get(SCHEDULE_LABEL) == name]
    return sorted(mine, key=lambda s: (s.execution.metadata[FIRE_TIME_LABEL], s.execution.created_at))


async def settle(rig: Rig, seconds: float) -> None:
    """Advance the clock a second at a time (connected workers heartbeat), letting the fires it causes finish."""
    for _ in range(int(seconds)):
        rig.advance(1)
        await idle(30)
        await rig.engine.flush()


async def test_a_schedule_fires_at_each_fire_time_with_its_key_and_labels(rig: Rig) -> None:
    await rig.engine.schedules.create(every_10s(overlap=OverlapPolicy.ALLOW_ALL))
    await settle(rig, 30)

    executions = await fired(rig)
    times = [s.execution.metadata[FIRE_TIME_LABEL] for s in executions]
    assert times == ["2030-01-01T00:00:10Z", "2030-01-01T00:00:20Z", "2030-01-01T00:00:30Z"]
    assert [s.execution.idempotency_key for s in executions] == [f"schedule:tick:{t}" for t in times]
    for snapshot, at in zip(executions, (10, 20, 30), strict=True):
        assert snapshot.execution.created_at == START + timedelta(seconds=at)
    schedule = rig.engine.schedules.get("tick")
    assert (schedule.fired, schedule.missed, schedule.skipped) == (3, 0, 0)
    assert rig.engine.schedules.next_fire_times(schedule, 2) == [
        START + timedelta(seconds=40),
        START + timedelta(seconds=50),
    ]


async def test_after_downtime_fires_within_the_catch_up_window_start_and_older_ones_are_missed(rig: Rig) -> None:
    await rig.engine.schedules.create(every_10s(catch_up_window=timedelta(seconds=30), overlap=OverlapPolicy.ALLOW_ALL))
    await settle(rig, 10)
    assert len(await fired(rig)) == 1

    await rig.engine.close()  # down from 00:00:10 to 00:01:05
    rig.clock.advance(55)
    await rig.start()
    await settle(rig, 1)

    times = [s.execution.metadata[FIRE_TIME_LABEL] for s in await fired(rig)]
    # 00:00:20 and 00:00:30 are older than 30 s when it wakes at 00:01:06; 00:00:40, 00:00:50 and 00:01:00 are made up.
    assert times == ["2030-01-01T00:00:10Z", "2030-01-01T00:00:40Z", "2030-01-01T00:00:50Z", "2030-01-01T00:01:00Z"]
    schedule = rig.engine.schedules.get("tick")
    assert (schedule.fired, schedule.missed) == (4, 2)


async def test_a_fire_repeated_after_a_crash_finds_the_execution_the_first_one_made(rig: Rig) -> None:
    await rig.engine.schedules.create(every_10s(overlap=OverlapPolicy.ALLOW_ALL))
    await settle(rig, 10)
    await rig.engine.close()
    # The schedule as it was before the fire at 00:00:10: what a crash between the fire and its cursor leaves.
    stored = [replace(s, cursor=START, fired=0, running=()) for s in await rig.store.load_schedules()]
    await rig.store.commit([WriteBatch(schedules=stored)])
    await rig.start()
    await settle(rig, 1)

    assert [s.execution.metadata[FIRE_TIME_LABEL] for s in await fired(rig)] == ["2030-01-01T00:00:10Z"]
    assert rig.engine.schedules.get("tick").fired == 1  # the repeat counted the fire the crash forgot


async def test_a_fire_a_crash_left_uncounted_past_the_window_is_counted_fired_not_missed(rig: Rig) -> None:
    await rig.engine.schedules.create(every_10s(catch_up_window=timedelta(0), overlap=OverlapPolicy.ALLOW_ALL))
    await settle(rig, 10)
    await rig.engine.close()
    # As a crash right after the fire at 00:00:10 leaves it; the server is back 35 s later, when that fire
    # and the ones at 00:00:20, 00:00:30 and 00:00:40 are past a zero window.
    stored = [replace(s, cursor=START, fired=0, running=()) for s in await rig.store.load_schedules()]
    await rig.store.commit([WriteBatch(schedules=stored)])
    rig.clock.advance(35)
    await rig.start()
    await settle(rig, 1)

    assert [s.execution.metadata[FIRE_TIME_LABEL] for s in await fired(rig)] == ["2030-01-01T00:00:10Z"]
    schedule = rig.engine.schedules.get("tick")
    assert (schedule.fired, schedule.missed) == (1, 3)
    assert schedule.last_fire_time == START + timedelta(seconds=10)


async def test_skip_counts_the_fires_while_an_execution_runs(rig: Rig) -> None:
    await rig.engine.schedules.create(every_10s())  # SKIP by default; no worker: the first stays PENDING
    await settle(rig, 30)

    assert len(await fired(rig)) == 1
    schedule = rig.engine.schedules.get("tick")
    assert (schedule.fired, schedule.skipped) == (1, 2)


async def test_buffer_one_starts_one_held_fire_when_the_running_execution_ends(rig: Rig) -> None:
    worker = rig.connect()
    await rig.engine.schedules.create(every_10s(overlap=OverlapPolicy.BUFFER_ONE))
    await settle(rig, 30)  # 00:00:10 runs; 00:00:20 is held; 00:00:30 is skipped
    (first,) = worker.invocations
    schedule = rig.engine.schedules.get("tick")
    assert (schedule.fired, schedule.skipped, schedule.buffered) == (1, 1, START + timedelta(seconds=20))

    worker.complete(first)
    await until(lambda: len(worker.invocations) == 2, "the held fire started")
    executions = await fired(rig)
    assert [s.execution.metadata[FIRE_TIME_LABEL] for s in executions] == [
        "2030-01-01T00:00:10Z",
        "2030-01-01T00:00:20Z",
    ]
    assert rig.engine.schedules.get("tick").buffered is None


async def test_cancel_other_cancels_the_running_execution_and_starts_the_new_one(rig: Rig) -> None:
    await rig.engine.schedules.create(every_10s(overlap=OverlapPolicy.CANCEL_OTHER))
    await settle(rig, 20)

    first, second = await fired(rig)
    assert first.execution.state is State.CANCELLED
    assert second.execution.state is State.PENDING
    assert rig.engine.schedules.get("tick").running == (second.execution.id,)


async def test_allow_all_starts_every_fire(rig: Rig) -> None:
    await rig.engine.schedules.create(every_10s(overlap=OverlapPolicy.ALLOW_ALL))
    await settle(rig, 30)
    executions = await fired(rig)
    assert [s.execution.state for s in executions] == [State.PENDING] * 3
    assert len(rig.engine.schedules.get("tick").running) == 3


async def test_pause_stops_the_fires_and_resume_goes_on_from_now(rig: Rig) -> None:
    schedules = rig.engine.schedules
    await schedules.create(every_10s(overlap=OverlapPolicy.ALLOW_ALL))
    await schedules.pause("tick")
    await settle(rig, 30)
    assert await fired(rig) == []
    assert schedules.next_fire_times(schedules.get("tick"), 1) == []

    resumed = await schedules.resume("tick")
    assert not resumed.paused
    await settle(rig, 10)
    assert [s.execution.metadata[FIRE_TIME_LABEL] for s in await fired(rig)] == ["2030-01-01T00:00:40Z"]
    assert schedules.get("tick").missed == 0  # the fires while paused are not missed


async def test_a_create_or_resume_whose_caller_gives_up_during_its_commit_still_fires(rig: Rig) -> None:
    # The change is stored whether or not its caller waits for the commit: its timer is armed either way.
    schedules = rig.engine.schedules
    await schedules.create(every_10s("later", paused=True))
    release = rig.hold_commits()
    creating = asyncio.ensure_future(schedules.create(every_10s("made", overlap=OverlapPolicy.ALLOW_ALL)))
    await until(lambda: "made" in [schedule.name for schedule in schedules.all()], "the create staged")
    resuming = asyncio.ensure_future(schedules.resume("later"))
    await until(lambda: not schedules.get("later").paused, "the resume staged")
    for call in (creating, resuming):
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    release.set()
    await settle(rig, 10)
    assert len(await fired(rig, "made")) == 1
    assert len(await fired(rig, "later")) == 1


async def test_a_fire_that_failed_is_tried_again_later_not_at_once(rig: Rig) -> None:
    schedules = rig.engine.schedules
    await schedules.create(every_10s(overlap=OverlapPolicy.ALLOW_ALL))
    refresh = schedules._refresh_running
    failures: list[datetime] = []

    async def failing(schedule: Schedule) -> Schedule:
        if not failures:
            failures.append(rig.clock.now())
            raise RuntimeError("the store is away")
        return await refresh(schedule)

    schedules._refresh_running = failing  # type: ignore[method-assign]
    await settle(rig, 10)
    assert failures == [START + timedelta(seconds=10)]
    assert await fired(rig) == []
    await settle(rig, 4)
    assert await fired(rig) == [], "not tried again at once"
    await settle(rig, 2)
    assert [s.execution.metadata[FIRE_TIME_LABEL] for s in await fired(rig)] == ["2030-01-01T00:00:10Z"]


async def test_trigger_starts_one_now_even_when_paused_and_delete_stops_it(rig: Rig) -> None:
    schedules = rig.engine.schedules
    await schedules.create(every_10s(paused=True))
    rig.clock.advance(3)
    _, execution_id = await schedules.trigger("tick")
    (only,) = await fired(rig)
    assert only.execution.id == execution_id
    assert only.execution.idempotency_key == "schedule:tick:trigger:2030-01-01T00:00:03Z"

    await schedules.delete("tick")
    with pytest.raises(NotFound):
        schedules.get("tick")
    assert await rig.store.load_schedules() == []
    await settle(rig, 20)
    assert len(await fired(rig)) == 1


async def test_schedules_survive_a_restart(rig: Rig) -> None:
    await rig.engine.schedules.create(every_10s(timezone="Europe/Paris", overlap=OverlapPolicy.ALLOW_ALL))
    await settle(rig, 10)
    await rig.restart()
    schedule = rig.engine.schedules.get("tick")
    assert (schedule.spec.timezone, schedule.fired, schedule.cursor) == (
        "Europe/Paris",
        1,
        START + timedelta(seconds=10),
    )
    await settle(rig, 10)
    assert rig.engine.schedules.get("tick").fired == 2


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"cron": "61 * * * *"}, "schedule.cron"),
        ({"cron": ""}, "schedule.cron"),
        ({"timezone": "Mars/Olympus"}, "schedule.timezone"),
        ({"name": "no spaces"}, "schedule.name"),
        ({"catch_up_window": timedelta(seconds=-1)}, "schedule.catch_up_window"),
        ({"execution": ExecutionSpec(tasks=(task(),), idempotency_key="k")}, "schedule.execution.idempotency_key"),
        ({"execution": ExecutionSpec(tasks=())}, "schedule.execution.tasks"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(rig: Rig, fields: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as refused:
        await rig.engine.schedules.create(replace(every_10s(), **fields))  # type: ignore[arg-type]
    assert refused.value.field == where


async def test_a_name_in_use_is_already_exists(rig: Rig) -> None:
    await rig.engine.schedules.create(every_10s())
    with pytest.raises(AlreadyExists):
        await rig.engine.schedules.create(every_10s())
