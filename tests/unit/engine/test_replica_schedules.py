"""Schedules across replicas, on the engine's side: a schedule created, paused, resumed or deleted through a replica
that does not lead reaches the leader by `refresh_schedules` (the server calls it on a notification and a poll),
which fires it as stored; the others show it as stored and arm nothing; a refresh never undoes a fire of the
leader's own that is under way. Two engines share one in-memory store (see test_replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from taskwire.server.domain import ExecutionSpec, OverlapPolicy, ScheduleSpec
from taskwire.server.store import MemoryStore, WriteBatch
from tests.unit.engine.support import CONFIG, idle, task, until
from tests.unit.engine.test_replicas import Directory, Replica, _replica

TICK = ScheduleSpec(
    name="tick", cron="*/10 * * * * *", execution=ExecutionSpec((task(),)), overlap=OverlapPolicy.ALLOW_ALL
)


class GatedStore(MemoryStore):
    """While `gate` is set and closed, a commit that writes schedules waits for it."""

    gate: asyncio.Event | None = None
    held = False  # a commit waits at the gate

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Exception | None]:
        if self.gate is not None and any(batch.schedules or batch.schedule_updates for batch in batches):
            self.held = True
            await self.gate.wait()
            self.held = False
        return await super().commit(batches)


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[Replica, Replica, GatedStore]]:
    """a does not lead, b leads (with no schedules yet)."""
    store = GatedStore()
    await store.open()
    directory = Directory(store)
    a = await _replica(directory, "a", CONFIG)
    b = await _replica(directory, "b", CONFIG)
    b.engine.replicas.leading = True
    await idle(30)  # b loads the (no) schedules
    try:
        yield a, b, store
    finally:
        await a.rig.close()
        await b.rig.close()
        await store.close()


async def _advance(seconds: float, *replicas: Replica) -> None:
    for replica in replicas:
        replica.rig.advance(seconds)
    await idle(30)


async def _fired(replica: Replica, count: int, what: str) -> None:
    """Until the schedule's wake that fired `count` times has ended (its timer armed again)."""
    schedules = replica.engine.schedules
    await until(lambda: schedules.get("tick").fired == count and not schedules._tasks, what)
    await replica.engine.flush()


async def _created_through_a(a: Replica, b: Replica) -> None:
    """TICK created through a, and known to b (which catches it up: nothing is due yet)."""
    await a.engine.schedules.create(TICK)
    assert await b.engine.schedules.refresh() == 1
    await _fired(b, 0, "the catch-up after the refresh")


async def _stored_executions(store: MemoryStore) -> int:
    page = await store.list_executions(states=[], handler="", page_size=100, page_token="")
    return len(page.snapshots)


async def test_a_schedule_created_through_another_replica_fires_on_the_leader_after_a_refresh(
    replicas: tuple[Replica, Replica, GatedStore],
) -> None:
    a, b, store = replicas
    await a.engine.schedules.create(TICK)
    await _advance(15, a, b)
    assert await _stored_executions(store) == 0  # b does not know of it yet, and a does not lead

    assert await b.engine.schedules.refresh() == 1
    await _fired(b, 1, "the catch-up of the fire time that passed")
    await _advance(10, a, b)
    await _fired(b, 2, "the next fire")
    assert await _stored_executions(store) == 2

    assert a.engine.schedules.get("tick").fired == 0  # what a last read
    assert await a.engine.schedules.refresh() == 1
    assert a.engine.schedules.get("tick") == (await store.load_schedules())[0] == b.engine.schedules.get("tick")
    assert await a.engine.schedules.refresh() == 0
    b.engine.replicas.leading = False  # nobody leads: a's copy fires nothing
    await _advance(30, a, b)
    assert await _stored_executions(store) == 2


async def test_a_pause_resume_and_delete_through_another_replica_reach_the_leader(
    replicas: tuple[Replica, Replica, GatedStore],
) -> None:
    a, b, store = replicas
    await _created_through_a(a, b)
    await _advance(10, a, b)
    await _fired(b, 1, "the first fire")

    paused = await a.engine.schedules.pause("tick")  # from the stored record: the leader's fire is kept
    assert (paused.paused, paused.fired) == (True, 1)
    assert await b.engine.schedules.refresh() == 1
    assert b.engine.schedules.get("tick").paused
    await _advance(30, a, b)
    assert await _stored_executions(store) == 1

    await a.engine.schedules.resume("tick")
    await b.engine.schedules.refresh()
    await _advance(10, a, b)
    await _fired(b, 2, "a fire after the resume")
    assert await _stored_executions(store) == 2

    await a.engine.schedules.delete("tick")
    assert await b.engine.schedules.refresh() == 1
    assert b.engine.schedules.all() == []
    await _advance(30, a, b)
    assert await _stored_executions(store) == 2
    assert await store.load_schedules() == []


async def test_a_change_asked_of_a_replica_that_does_not_lead_starts_from_the_stored_record(
    replicas: tuple[Replica, Replica, GatedStore],
) -> None:
    a, b, store = replicas
    await b.engine.schedules.create(TICK)  # created on the leader: a has never read it
    with pytest.raises(Exception, match="exists already"):
        await a.engine.schedules.create(TICK)
    await _advance(10, a, b)
    await _fired(b, 1, "the first fire")
    _, execution_id = await a.engine.schedules.trigger("tick")
    stored = (await store.load_schedules())[0]
    assert (stored.fired, stored.last_execution_id) == (2, execution_id)
    await b.engine.schedules.delete("tick")
    with pytest.raises(Exception, match="tick"):
        await a.engine.schedules.pause("tick")
    assert a.engine.schedules.all() == []


async def test_a_refresh_does_not_undo_a_fire_of_the_leader_under_way(
    replicas: tuple[Replica, Replica, GatedStore],
) -> None:
    a, b, store = replicas
    await _created_through_a(a, b)
    store.gate = asyncio.Event()
    await _advance(10, b)
    await until(lambda: store.held, "the fire's commit under way")
    assert b.engine.schedules.get("tick").fired == 1  # in memory; the store has the record before the fire

    refreshing = asyncio.create_task(b.engine.schedules.refresh())
    await idle(30)
    assert not refreshing.done()  # it waits for the fire's commit
    store.gate.set()
    assert await refreshing == 0  # and then finds memory as stored: nothing to take
    fired = b.engine.schedules.get("tick")
    assert fired.fired == 1
    assert (await store.load_schedules())[0] == fired
    await _advance(10, b)
    await _fired(b, 2, "the next fire")
    assert await _stored_executions(store) == 2


async def test_the_leader_reads_a_schedule_again_before_it_fires_it(
    replicas: tuple[Replica, Replica, GatedStore],
) -> None:
    """A pause or a delete through another replica that the leader has not refreshed yet: its next wake neither
    fires nor writes the schedule back."""
    a, b, store = replicas
    await _created_through_a(a, b)
    await a.engine.schedules.pause("tick")
    await _advance(10, a, b)
    await idle(30)
    assert b.engine.schedules.get("tick").paused
    assert await _stored_executions(store) == 0

    await a.engine.schedules.resume("tick")  # a paused schedule has no timer: this one the leader must refresh
    assert await b.engine.schedules.refresh() == 1
    await _advance(10, a, b)
    await _fired(b, 1, "a fire after the resume")
    await a.engine.schedules.delete("tick")
    await _advance(10, a, b)
    await until(lambda: b.engine.schedules.all() == [], "the leader to find it deleted")
    await b.engine.flush()
    assert await store.load_schedules() == []
    assert await _stored_executions(store) == 1


async def test_a_schedule_deleted_through_another_replica_during_a_fire_of_the_leader_stays_deleted(
    replicas: tuple[Replica, Replica, GatedStore],
) -> None:
    """The leader read the schedule before another replica deleted it, and commits its fire after the delete: the
    fire's write replaces only a stored schedule, so the delete holds (the execution it started goes on)."""
    a, b, store = replicas
    await _created_through_a(a, b)
    store.gate = asyncio.Event()
    await _advance(10, b)
    await until(lambda: store.held, "the fire's commit under way")
    await a.engine.schedules.delete("tick")
    assert await store.load_schedules() == []
    store.gate.set()
    await until(lambda: not store.held, "the fire's commit")
    await b.engine.flush()
    assert await store.load_schedules() == []
    assert await b.engine.schedules.refresh() == 1
    assert b.engine.schedules.all() == []
    assert await _stored_executions(store) == 1
