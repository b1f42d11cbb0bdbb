"""Schedules in every store of the `make_store` fixture: written whole (`WriteBatch.schedules`), replaced by
name, replaced only where stored (`WriteBatch.schedule_updates`), deleted (`WriteBatch.deleted_schedules`), and
read back all at once (`load_schedules`) after a reopen."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from taskwire.server.domain import (
    ExecutionSpec,
    OverlapPolicy,
    Payload,
    RetryPolicy,
    Schedule,
    ScheduleSpec,
    TaskSpec,
)
from taskwire.server.store import Store, WriteBatch
from tests.unit.store.conftest import Reopen
from tests.unit.store.records import T0, pending_execution, submit_batch
from tests.unit.store.support import write

pytestmark = pytest.mark.timeout(30)

EXECUTION = ExecutionSpec(
    tasks=(
        TaskSpec("fetch", task_id="fetch", input=Payload(b"\x00\xffbytes", "application/octet-stream")),
        TaskSpec(
            "resize",
            task_id="resize",
            depends_on=("fetch",),
            timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(max_attempts=3, non_retryable_error_types=("ValueError",)),
            schedule_to_start_timeout=timedelta(minutes=5),
            priority=7,
            concurrency_key="images",
            concurrency_limit=2,
            fairness_key="tenant-a",
            rate_limit="thumbnails",
            rate_limit_key="tenant-a",
        ),
    ),
    name="nightly resize",
    metadata={"team": "images"},
    timeout=timedelta(hours=1),
)


def schedule(name: str = "nightly", **state: object) -> Schedule:
    spec = ScheduleSpec(
        name=name,
        cron="0 3 * * *",
        timezone="Europe/Paris",
        execution=EXECUTION,
        catch_up_window=timedelta(minutes=10),
        overlap=OverlapPolicy.BUFFER_ONE,
    )
    return replace(Schedule(spec=spec, created_at=T0, updated_at=T0, cursor=T0), **state)  # type: ignore[arg-type]


async def test_a_schedule_reads_back_as_written_after_a_reopen(store: Store, reopen: Reopen) -> None:
    written = schedule(
        fired=3,
        missed=1,
        skipped=2,
        running=("e1", "e2"),
        buffered=T0 + timedelta(days=1),
        last_fire_time=T0 + timedelta(hours=3),
        last_execution_id="e2",
        paused=True,
    )
    await write(store, WriteBatch(schedules=[written, schedule("hourly")]))
    store = await reopen(store)
    assert await store.load_schedules() == [schedule("hourly"), written]


async def test_a_schedule_is_replaced_by_name_and_deleted(store: Store) -> None:
    await write(store, WriteBatch(schedules=[schedule(), schedule("other")]))
    await write(store, WriteBatch(schedules=[schedule(fired=1, cursor=T0 + timedelta(days=1))]))
    assert [s.fired for s in await store.load_schedules()] == [1, 0]

    await write(store, WriteBatch(deleted_schedules=["nightly", "never-stored"]))
    assert [s.name for s in await store.load_schedules()] == ["other"]


async def test_a_fire_and_the_schedule_commit_in_one_batch(store: Store) -> None:
    fire = pending_execution(key="schedule:nightly:2030-01-01T03:00:00Z")
    batch = submit_batch(fire)
    batch.schedules.append(schedule(fired=1, running=(fire.execution.id,)))
    await write(store, batch)
    assert (await store.load_schedules())[0].running == (fire.execution.id,)
    assert await store.get_execution(fire.execution.id) is not None


async def test_a_schedule_update_replaces_a_stored_schedule_only(store: Store) -> None:
    """An update (a fire, a pause) of a schedule that another replica deleted meanwhile leaves it deleted."""
    await write(store, WriteBatch(schedules=[schedule()]))
    await write(store, WriteBatch(schedule_updates=[schedule(fired=1), schedule("deleted-meanwhile", fired=1)]))
    assert [(s.name, s.fired) for s in await store.load_schedules()] == [("nightly", 1)]
    await write(store, WriteBatch(deleted_schedules=["nightly"]))
    await write(store, WriteBatch(schedule_updates=[schedule(fired=2)]))
    assert await store.load_schedules() == []


async def test_a_schedule_written_new_then_updated_in_one_commit_is_stored(store: Store) -> None:
    """Batches committed together apply in order: a new schedule then its update is stored as updated; an update
    after a delete, or before the new one, is not."""
    refusals = await store.commit(
        [
            WriteBatch(schedules=[schedule()], deleted_schedules=["other"]),
            WriteBatch(schedule_updates=[schedule(fired=1), schedule("other", fired=1)]),
        ]
    )
    assert refusals == [None, None]
    assert [(s.name, s.fired) for s in await store.load_schedules()] == [("nightly", 1)]
    refusals = await store.commit(
        [WriteBatch(schedule_updates=[schedule("late", fired=1)]), WriteBatch(schedules=[schedule("late")])]
    )
    assert [(s.name, s.fired) for s in await store.load_schedules()] == [("late", 0), ("nightly", 1)]
