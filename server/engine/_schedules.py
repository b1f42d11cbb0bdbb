"""Schedules: executions started on a cron schedule, with catch-up after downtime and an overlap policy.

Every schedule is held in memory (they are few) and stored whole through the committer. Each one not
paused has one timer on the engine's heap, armed for its next fire time. When it fires, the schedule's
fires since its cursor are looked at (`due_fires`, pure): those within the catch-up window are started
in order, older ones are counted missed. Starting a fire goes through the normal submit path with an
idempotency key made of the schedule's name and the fire time (`fire_key`), so a fire that a restart
(or another replica) repeats finds the execution the first one made instead of making another. The
execution carries the labels `taskwire.schedule` and `taskwire.schedule.fire_time`. Only after the
executions are durable is the schedule's new cursor staged: a crash in between repeats those fires,
and the first wake after a start looks up the keys of its first fires: those a crash left uncounted are
counted fired, whatever the catch-up window or the overlap policy would now say of them.

Before each fire the overlap policy (`overlap_decision`, pure) looks at the executions the schedule
started that have not finished: SKIP counts a skip, BUFFER_ONE keeps one fire until they end,
CANCEL_OTHER cancels them and starts, ALLOW_ALL starts. An execution that ends tells the room (the live
executions' `retired` hook), which starts a buffered fire. A trigger starts one execution at once,
whatever the policy; pausing disarms the timer, and resuming looks only at fires after the resume.

Every change of one schedule runs under its own lock, so a timer, a trigger and an ending execution
never interleave on it.

Replicas share the stored schedules, and only the leading one fires them (`leading`; the others arm no
timer). A schedule changed through another replica reaches this one by `refresh`, which writes nothing:
those new in the store are added, those gone dropped, those whose stored record differs from memory
replace it; while leading, each added or replaced one is caught up as `start` does. It compares and
replaces under the schedule's lock, after the committer's flush and with a read made inside the lock,
so a fire or change under way here is durable before it is compared and is never undone by an older read.
A replica refreshes before each change it is asked for, and the leader reads the schedule again under
its lock before each wake, so that a change or a fire starts from the stored record, not from an older
copy. Only a new schedule is written where none is stored (`stage_schedule(new=True)`); a fire or a change
replaces the stored one only, so a schedule deleted through another replica while the leader fired it stays
deleted. (Two replicas that change the same schedule at the same moment still race: the last commit wins.)

May use: the clock, the timers, the committer, the store (schedules, and executions for their state),
and the hooks the engine wires: submit, cancel, and which executions are still active.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from taskwire.server.domain import (
    FIRE_TIME_LABEL,
    SCHEDULE_LABEL,
    Action,
    AlreadyExists,
    ExecutionSpec,
    Limits,
    NotFound,
    QueueFull,
    Schedule,
    ScheduleSpec,
    ShuttingDown,
    TaskwireError,
    check_schedule,
    due_fires,
    fire_key,
    fire_time_text,
    next_fire_times,
    overlap_decision,
    validate_schedule_name,
    validate_schedule_spec,
)
from taskwire.server.store import Committer, Store, schedule_to_text

from ._clock import Clock
from ._timers import Timers

log = logging.getLogger(__name__)

#: After a fire failed to be handled, the schedule's timer waits this long at least before it tries again.
RETRY_FAILED_WAKE = timedelta(seconds=5)

# submit(spec, fingerprint) -> (execution id, whether it is still active)
SubmitHook = Callable[[ExecutionSpec, str], Awaitable[tuple[str, bool]]]
CancelHook = Callable[[str, str], Awaitable[object]]
ActiveHook = Callable[[Sequence[str]], Awaitable[set[str]]]


async def _unwired(*_: object) -> object:
    raise AssertionError("the engine wires this hook before use")


class Schedules:
    def __init__(self, *, clock: Clock, timers: Timers, committer: Committer, store: Store, limits: Limits) -> None:
        self._clock = clock
        self._timers = timers
        self._committer = committer
        self._store = store
        self._limits = limits
        self._by_name: dict[str, Schedule] = {}
        # Loaded from the store and not woken since: only their first fires can be ones a crash left uncounted.
        self._recovered: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # Wired by the engine.
        self.submit: SubmitHook = _unwired  # type: ignore[assignment]
        self.cancel: CancelHook = _unwired
        self.active: ActiveHook = _unwired  # type: ignore[assignment]
        # Whether this server fires schedules (replicas: only the leading one, which loads them again when
        # it begins to lead), and whether other servers change the stored schedules too (replicas).
        self.leading: Callable[[], bool] = lambda: True
        self.shared = False

    # ---- Lifecycle ------------------------------------------------------------------------------

    async def load(self) -> int:
        """Read the stored schedules (before the timers start, or when a replica begins to lead); `start`
        arms them."""
        stored = await self._store.load_schedules()
        self._by_name = {schedule.name: schedule for schedule in stored}
        self._recovered = set(self._by_name)
        return len(self._by_name)

    def start(self) -> None:
        """Catch up every schedule that is not paused (what fell due while the server was down), then go on."""
        for name, schedule in self._by_name.items():
            if not schedule.paused:
                self._spawn(self._wake(name), name)

    async def refresh(self) -> int:
        """Bring memory in step with the stored schedules (another replica may have created, changed or deleted
        some), writing nothing; how many were added, replaced or dropped. See the module."""
        if self._closed:
            return 0
        await self._committer.flush()
        differ = self._differing(await self._store.load_schedules())
        if not differ:
            return 0
        async with contextlib.AsyncExitStack() as locks:
            for name in differ:  # sorted; nothing else holds two of these locks
                await locks.enter_async_context(self._lock(name))
            await self._committer.flush()  # what was staged before a lock was taken is durable now
            stored = {schedule.name: schedule for schedule in await self._store.load_schedules()}
            changed = [name for name in differ if self._take_stored(name, stored.get(name))]
        if changed:  # on the others, every fire of the leader's changes one
            log.log(logging.INFO if self.leading() else logging.DEBUG, "schedules read again: %s", ", ".join(changed))
        return len(changed)

    def _differing(self, stored: list[Schedule]) -> list[str]:
        by_name = {schedule.name: schedule for schedule in stored}
        return [
            name for name in sorted({*by_name, *self._by_name}) if not _same(by_name.get(name), self._by_name.get(name))
        ]

    def _take_stored(self, name: str, stored: Schedule | None) -> bool:
        """Under the schedule's lock: make memory what the store holds; whether it changed."""
        if self._closed or not self._set_stored(name, stored):
            return False
        self._recovered.discard(name)
        if stored is not None and self.leading() and not stored.paused:
            # As `start` does: the first wake looks up the keys of its first fires, then catches up.
            self._recovered.add(name)
            self._spawn(self._wake(name), name)  # runs once the lock is free
        return True

    def _set_stored(self, name: str, stored: Schedule | None) -> bool:
        if _same(stored, self._by_name.get(name)):
            return False
        self._timers.disarm(_timer_key(name))
        if stored is None:
            del self._by_name[name]
        else:
            self._by_name[name] = stored
        return True

    async def _reread(self, name: str) -> Schedule | None:
        """Under the schedule's lock on a replica, before a fire: the schedule as stored now (another replica may
        have paused, changed or deleted it since the last refresh), in memory too."""
        await self._committer.flush()
        stored = {schedule.name: schedule for schedule in await self._store.load_schedules()}.get(name)
        self._set_stored(name, stored)
        return stored

    async def close(self) -> None:
        self._closed = True
        for name in self._by_name:
            self._timers.disarm(_timer_key(name))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- Reads ----------------------------------------------------------------------------------

    def get(self, name: str) -> Schedule:
        schedule = self._by_name.get(name)
        if schedule is None:
            raise NotFound("schedule", name, key="name")
        return schedule

    def all(self) -> list[Schedule]:
        return [self._by_name[name] for name in sorted(self._by_name)]

    def next_fire_times(self, schedule: Schedule, count: int) -> list[datetime]:
        """The next fire times of a schedule from now on (none while it is paused)."""
        if schedule.paused:
            return []
        return next_fire_times(schedule.spec, max(schedule.cursor, self._clock.now()), count)

    # ---- Changes --------------------------------------------------------------------------------

    async def create(self, spec: ScheduleSpec) -> Schedule:
        """Store a new schedule; it fires from now on. ALREADY_EXISTS for a name in use."""
        spec = validate_schedule_spec(spec, self._limits)
        check_schedule(spec)
        await self._in_step()
        if spec.name in self._by_name:
            raise AlreadyExists(f"a schedule named {spec.name!r} exists already")
        now = self._clock.now()
        schedule = Schedule(spec=spec, created_at=now, updated_at=now, cursor=now, paused=spec.paused)
        self._by_name[spec.name] = schedule
        self._committer.stage_schedule(schedule, new=True)
        self._arm(schedule)  # before the wait: a caller that gives up then leaves it stored, and armed
        await self._committer.durable()
        log.info("schedule %s created (%s, %s)", spec.name, spec.cron, spec.timezone)
        return schedule

    async def pause(self, name: str) -> Schedule:
        await self._in_step()
        async with self._lock(self._known(name)):
            schedule = self.get(name)
            if not schedule.paused:
                self._timers.disarm(_timer_key(name))
                schedule = self._save(replace(schedule, paused=True))
                await self._committer.durable()
            return schedule

    async def resume(self, name: str) -> Schedule:
        """Fire again from now on: the fire times while it was paused are neither started nor counted."""
        await self._in_step()
        async with self._lock(self._known(name)):
            schedule = self.get(name)
            if schedule.paused:
                now = self._clock.now()
                schedule = self._save(replace(schedule, paused=False, cursor=max(schedule.cursor, now)))
                self._arm(schedule)  # before the wait, as in `create`
                await self._committer.durable()
            return schedule

    async def delete(self, name: str) -> None:
        """Forget the schedule; the executions it started go on."""
        await self._in_step()
        async with self._lock(self._known(name)):
            self._timers.disarm(_timer_key(name))
            del self._by_name[name]
            self._committer.stage_schedule_delete(name)
            await self._committer.durable()
        # Its lock stays: a wake that waits on it finds the schedule gone, even if a new one takes the name.
        log.info("schedule %s deleted", name)

    async def trigger(self, name: str) -> tuple[Schedule, str]:
        """Start one execution now, whatever the overlap policy and even while paused; returns its id."""
        await self._in_step()
        async with self._lock(self._known(name)):
            now = self._clock.now()
            schedule = self.get(name)
            schedule, execution_id = await self._start(schedule, now, trigger=True)
            self._save(schedule)
            await self._committer.durable()
            return schedule, execution_id

    def execution_ended(self, execution_id: str, metadata: Mapping[str, str]) -> None:
        """An execution left the live set finished (its end is durable); if a schedule started it, it no
        longer overlaps, and a fire it held back may start. (Looked at under the schedule's lock: a fire
        that is starting it holds the lock until the execution is among the schedule's running ones.)"""
        name = metadata.get(SCHEDULE_LABEL)
        if name and name in self._by_name and not self._closed and self.leading():
            self._spawn(self._ended(name, execution_id), name)

    # ---- Firing ---------------------------------------------------------------------------------

    async def _in_step(self) -> None:
        """Before a change on a replica: memory as stored now (the leader's fires move the cursors and counts;
        other replicas create, change and delete), so that the change starts from the stored record."""
        if self.shared:
            await self.refresh()

    def _known(self, name: str) -> str:
        validate_schedule_name(name)
        self.get(name)
        return name

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except ShuttingDown:
                return  # the next server catches up
            except Exception:
                # A store that fails stops the server through the committer; anything else is logged, and
                # the next fire time tries again.
                log.exception("schedule %s: handling a fire failed", name)
                schedule = self._by_name.get(name)
                if schedule is not None and not self._closed:
                    # Not at once: a fire time already due would fail again in a loop while the cause lasts.
                    self._arm(schedule, not_before=self._clock.now() + RETRY_FAILED_WAKE)

        task = asyncio.create_task(run(), name=f"taskwire-schedule-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _arm(self, schedule: Schedule, *, not_before: datetime | None = None) -> None:
        """Arm the timer for the schedule's next fire time after its cursor, or at `not_before` if that is
        later (none while paused, nor on a replica that does not lead: it arms them all when it begins to lead)."""
        if schedule.paused or self._closed or not self.leading():
            return
        upcoming = next_fire_times(schedule.spec, schedule.cursor, 1)
        if upcoming:
            name = schedule.name
            when = upcoming[0] if not_before is None else max(upcoming[0], not_before)
            self._timers.arm_at(_timer_key(name), when, lambda: self._spawn(self._wake(name), name))

    def _save(self, schedule: Schedule) -> Schedule:
        schedule = replace(schedule, updated_at=self._clock.now())
        self._by_name[schedule.name] = schedule
        self._committer.stage_schedule(schedule)
        return schedule

    async def _wake(self, name: str) -> None:
        """Handle every fire time that came due, in order; then arm the timer for the next one."""
        if not self.leading():
            return  # the leading replica fires it; this one catches up when it begins to lead
        async with self._lock(name):
            schedule = await self._reread(name) if self.shared else self._by_name.get(name)
            if schedule is None:
                return
            schedule = await self._refresh_running(schedule)
            buffered = schedule.buffered
            if buffered is not None and not schedule.running:
                schedule, _ = await self._start(schedule, buffered)
                schedule = self._save(replace(schedule, buffered=None))
            while not schedule.paused:
                now = self._clock.now()
                plan = due_fires(schedule, now)
                schedule, started = await self._started_before_a_crash(schedule, [*plan.missed_times, *plan.due])
                missed = max(0, plan.missed - started)
                for fire_time in plan.due[max(0, started - plan.missed) :]:
                    schedule = await self._fire(schedule, fire_time)
                if missed:
                    log.warning("schedule %s: %d fire times missed (beyond the catch-up window)", name, missed)
                schedule = self._save(replace(schedule, cursor=plan.cursor, missed=schedule.missed + missed))
                if not plan.more:
                    break
                await self._committer.durable()  # a long downtime is counted in steps, committed as it goes
            await self._committer.durable()
            self._arm(schedule)

    async def _started_before_a_crash(self, schedule: Schedule, fires: list[datetime]) -> tuple[Schedule, int]:
        """Count as fired the fires whose executions a crash left behind (started and durable, but the cursor
        that counts them was not yet), whatever the overlap policy or the catch-up window now say of them;
        return the schedule and how many they were. Fires start in order, so these are the first of `fires`:
        the first without an execution ends them. Only the first wake after a start looks: a running server
        stages a cursor as soon as its fires are durable."""
        if schedule.name not in self._recovered:
            return schedule, 0
        self._recovered.discard(schedule.name)
        for index, fire_time in enumerate(fires):
            hit = await self._store.find_idempotency_key(fire_key(schedule.name, fire_time))
            if hit is None:
                return schedule, index
            running = schedule.running
            if hit.execution_id not in running and await self.active([hit.execution_id]):
                running = (*running, hit.execution_id)
            schedule = replace(
                schedule,
                fired=schedule.fired + 1,
                running=running,
                last_fire_time=fire_time,
                last_execution_id=hit.execution_id,
            )
        return schedule, len(fires)

    async def _fire(self, schedule: Schedule, fire_time: datetime) -> Schedule:
        """One due fire time, as the overlap policy decides."""
        schedule = await self._refresh_running(schedule)
        decision = overlap_decision(
            schedule.spec.overlap, running=len(schedule.running), buffered=schedule.buffered is not None
        )
        if decision.action is Action.SKIP:
            log.info(
                "schedule %s: fire %s skipped (an earlier execution is running)",
                schedule.name,
                fire_time_text(fire_time),
            )
            return replace(schedule, skipped=schedule.skipped + 1)
        if decision.action is Action.BUFFER:
            return replace(schedule, buffered=fire_time)
        if decision.cancel_running:
            for execution_id in schedule.running:
                reason = f"schedule {schedule.name}: a newer fire ({fire_time_text(fire_time)}) replaces it"
                await self.cancel(execution_id, reason)
        started, _ = await self._start(schedule, fire_time)
        return started

    async def _start(self, schedule: Schedule, fire_time: datetime, *, trigger: bool = False) -> tuple[Schedule, str]:
        """Submit the execution of one fire (durable on return). A full queue counts the fire missed."""
        name = schedule.name
        spec = schedule.spec.execution
        labels = {**spec.metadata, SCHEDULE_LABEL: name, FIRE_TIME_LABEL: fire_time_text(fire_time)}
        key = fire_key(name, fire_time, trigger=trigger)
        try:
            execution_id, active = await self.submit(replace(spec, metadata=labels, idempotency_key=key), key)
        except ShuttingDown:
            raise
        except QueueFull as error:
            if trigger:
                raise
            log.warning("schedule %s: fire %s missed: %s", name, fire_time_text(fire_time), error.message)
            return replace(schedule, missed=schedule.missed + 1), ""
        except TaskwireError as error:
            if trigger:
                raise
            log.error("schedule %s: fire %s could not start: %s", name, fire_time_text(fire_time), error.message)
            return replace(schedule, missed=schedule.missed + 1), ""
        running = schedule.running
        if active and execution_id not in running:
            running = (*running, execution_id)
        started = replace(
            schedule,
            fired=schedule.fired + 1,
            running=running,
            last_fire_time=fire_time,
            last_execution_id=execution_id,
        )
        return started, execution_id

    async def _refresh_running(self, schedule: Schedule) -> Schedule:
        """Drop the executions that have finished from the schedule's running ones."""
        if not schedule.running:
            return schedule
        active = await self.active(schedule.running)
        running = tuple(execution_id for execution_id in schedule.running if execution_id in active)
        if running == schedule.running:
            return schedule
        return self._save(replace(schedule, running=running))

    async def _ended(self, name: str, execution_id: str) -> None:
        async with self._lock(name):
            schedule = self._by_name.get(name)
            if schedule is None or execution_id not in schedule.running:
                return
            running = tuple(other for other in schedule.running if other != execution_id)
            schedule = self._save(replace(schedule, running=running))
            buffered = schedule.buffered
            if buffered is not None:
                schedule = await self._refresh_running(schedule)
                if not schedule.running:
                    schedule, _ = await self._start(schedule, buffered)
                    schedule = self._save(replace(schedule, buffered=None))
            await self._committer.durable()


def _same(one: Schedule | None, other: Schedule | None) -> bool:
    """The same stored record (compared as stored: a spec's `paused` is not, for one)."""
    if one is None or other is None:
        return one is other
    return schedule_to_text(one) == schedule_to_text(other)


def _timer_key(name: str) -> tuple[str, str]:
    return ("cron", name)
