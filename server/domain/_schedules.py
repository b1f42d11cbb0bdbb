"""The timing rules of schedules, pure: when a schedule fires, which fires are due or missed, what overlaps do.

Cron expressions are read by `cronsim` (five fields, or six with seconds first), in the schedule's time
zone (`zoneinfo`), and every fire time is returned in UTC. Daylight saving time is the library's: a fire
time that falls in the hour a spring change skips happens at the moment the clock jumps (02:30 becomes
03:00); in the hour an autumn change repeats, an expression with a fixed hour fires once, one that names
every hour or minute fires in both copies of the hour.

Nothing here reads a clock: `now` is always passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from taskwire.common import OverlapPolicy, Schedule, ScheduleSpec, ValidationError

# How many fire times one call of `due_fires` looks at, at most: the engine asks again for the rest (a long
# downtime of a schedule that fires every second is a million fire times to count).
MAX_STEPS = 10_000


def time_zone(name: str, where: str = "schedule.timezone") -> ZoneInfo:
    """The IANA time zone called `name`; ValidationError naming the field when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(where, f"unknown time zone {name!r}; use an IANA name such as 'Europe/Paris'") from None


def check_cron(expression: str, where: str = "schedule.cron") -> None:
    """ValidationError naming the field (and cronsim's reason) for an expression cronsim cannot read."""
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as error:
        raise ValidationError(where, f"{expression!r} is not a cron expression ({error})") from None


def check_schedule(spec: ScheduleSpec) -> None:
    """The server's checks of a validated spec: the cron expression and the time zone mean something."""
    time_zone(spec.timezone)
    check_cron(spec.cron)


def fire_times(spec: ScheduleSpec, after: datetime) -> Iterator[datetime]:
    """The fire times strictly after `after`, in order, in UTC. (Around a change from summer time, a time in
    the repeated hour can come back as its earlier instance, before `after`: such a time is left out.)"""
    zone = time_zone(spec.timezone)
    for local in CronSim(spec.cron, after.astimezone(zone)):
        fire = local.astimezone(UTC)
        if fire > after:
            yield fire


def next_fire_times(spec: ScheduleSpec, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times after `after` (fewer when the expression names no more, e.g. Feb 30)."""
    found: list[datetime] = []
    if count <= 0:
        return found
    for fire_time in fire_times(spec, after):
        found.append(fire_time)
        if len(found) >= count:
            break
    return found


@dataclass(frozen=True, slots=True)
class DueFires:
    """What has come due since a schedule's cursor: fires to start now, and fires missed."""

    due: list[datetime]  # within the catch-up window, oldest first
    missed_times: list[datetime]  # older than the catch-up window, oldest first
    cursor: datetime  # the latest fire time looked at (the schedule's cursor moves here)
    more: bool  # MAX_STEPS reached: ask again from `cursor`

    @property
    def missed(self) -> int:
        return len(self.missed_times)


def due_fires(schedule: Schedule, now: datetime, *, max_steps: int = MAX_STEPS) -> DueFires:
    """The fire times after the schedule's cursor up to `now`: those at most its catch-up window old are
    due, older ones are missed. The newest is due even with a zero window, unless it is older than a second
    (a timer wakes a little after the time it was armed for)."""
    window = max(schedule.spec.catch_up_window, timedelta(seconds=1))
    due: list[datetime] = []
    missed: list[datetime] = []
    cursor = schedule.cursor
    for steps, fire_time in enumerate(fire_times(schedule.spec, schedule.cursor), start=1):
        if fire_time > now:
            return DueFires(due, missed, cursor, more=False)
        (due if now - fire_time <= window else missed).append(fire_time)
        cursor = fire_time
        if steps >= max_steps:
            return DueFires(due, missed, cursor, more=True)
    return DueFires(due, missed, cursor, more=False)


class Action(enum.Enum):
    START = "start"
    SKIP = "skip"
    BUFFER = "buffer"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    cancel_running: bool = False  # CANCEL_OTHER: the running executions are cancelled first


def overlap_decision(policy: OverlapPolicy, *, running: int, buffered: bool) -> Decision:
    """What a fire does when `running` executions of its schedule have not finished and one fire is or is not
    buffered already."""
    if running == 0:
        return Decision(Action.START)
    if policy is OverlapPolicy.ALLOW_ALL:
        return Decision(Action.START)
    if policy is OverlapPolicy.CANCEL_OTHER:
        return Decision(Action.START, cancel_running=True)
    if policy is OverlapPolicy.BUFFER_ONE and not buffered:
        return Decision(Action.BUFFER)
    return Decision(Action.SKIP)  # SKIP, a second fire under BUFFER_ONE, and a policy this version does not know
