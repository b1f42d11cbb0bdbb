"""The pure timing rules of schedules: fire times in a time zone (daylight saving included), due and missed
fires, and the overlap decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskwire.server.domain import (
    Action,
    Decision,
    ExecutionSpec,
    OverlapPolicy,
    Schedule,
    ScheduleSpec,
    TaskSpec,
    ValidationError,
    check_schedule,
    due_fires,
    fire_key,
    next_fire_times,
    overlap_decision,
)
from taskwire.server.domain._schedules import fire_times

EXECUTION = ExecutionSpec(tasks=(TaskSpec("echo"),))


def spec(cron: str, timezone: str = "UTC", window: timedelta = timedelta(seconds=60)) -> ScheduleSpec:
    return ScheduleSpec(name="s", cron=cron, execution=EXECUTION, timezone=timezone, catch_up_window=window)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type,misc]


def test_fire_times_are_read_in_the_time_zone_and_given_in_utc() -> None:
    paris = spec("0 9 * * *", "Europe/Paris")
    assert next_fire_times(paris, utc(2026, 12, 1), 2) == [utc(2026, 12, 1, 8), utc(2026, 12, 2, 8)]
    assert next_fire_times(paris, utc(2026, 7, 1), 1) == [utc(2026, 7, 1, 7)]  # summer time: UTC+2


def test_a_time_the_spring_change_skips_fires_when_the_clock_jumps() -> None:
    # 2026-03-29 in Paris: 02:00 becomes 03:00 (01:00 UTC).
    fires = next_fire_times(spec("30 2 * * *", "Europe/Paris"), utc(2026, 3, 28, 12), 2)
    assert fires == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]


def test_the_hour_the_autumn_change_repeats_fires_once_for_a_fixed_hour_and_twice_for_every_half_hour() -> None:
    # 2026-10-25 in Paris: 03:00 becomes 02:00 again (01:00 UTC).
    assert next_fire_times(spec("30 2 * * *", "Europe/Paris"), utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]
    half_hours = next_fire_times(spec("*/30 * * * *", "Europe/Paris"), utc(2026, 10, 24, 23, 45), 5)
    assert half_hours == [
        utc(2026, 10, 25, 0),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 1),
        utc(2026, 10, 25, 1, 30),
        utc(2026, 10, 25, 2),
    ]


def test_from_inside_the_repeated_hour_the_next_fire_is_never_before_the_start() -> None:
    # 2026-10-25 in Paris, 01:10 UTC is 02:10 the second time; 02:30 the first time (00:30 UTC) is past.
    after = utc(2026, 10, 25, 1, 10)
    fires = next_fire_times(spec("30 2 * * *", "Europe/Paris"), after, 2)
    assert all(fire > after for fire in fires)
    assert fires[0] == utc(2026, 10, 26, 1, 30)


def schedule(cron: str, cursor: datetime, window: timedelta) -> Schedule:
    return Schedule(spec=spec(cron, window=window), created_at=cursor, updated_at=cursor, cursor=cursor)


def test_fires_older_than_the_catch_up_window_are_missed_and_the_rest_are_due() -> None:
    plan = due_fires(schedule("* * * * *", utc(2026, 12, 1, 10), timedelta(minutes=2)), utc(2026, 12, 1, 10, 5, 30))
    assert plan.due == [utc(2026, 12, 1, 10, 4), utc(2026, 12, 1, 10, 5)]
    assert (plan.missed, plan.cursor, plan.more) == (3, utc(2026, 12, 1, 10, 5), False)


def test_a_zero_window_still_starts_the_fire_its_timer_woke_for() -> None:
    plan = due_fires(schedule("* * * * *", utc(2026, 12, 1, 10), timedelta(0)), utc(2026, 12, 1, 10, 1, 0, 200_000))
    assert (plan.due, plan.missed) == ([utc(2026, 12, 1, 10, 1)], 0)


def test_a_long_downtime_is_counted_in_steps() -> None:
    every_second = schedule("* * * * * *", utc(2026, 12, 1), timedelta(seconds=10))
    plan = due_fires(every_second, utc(2026, 12, 1, 1), max_steps=1000)
    assert (plan.due, plan.missed, plan.cursor, plan.more) == ([], 1000, utc(2026, 12, 1, 0, 16, 40), True)


@pytest.mark.parametrize(
    ("policy", "running", "buffered", "decision"),
    [
        (OverlapPolicy.SKIP, 0, False, Decision(Action.START)),
        (OverlapPolicy.SKIP, 1, False, Decision(Action.SKIP)),
        (OverlapPolicy.BUFFER_ONE, 1, False, Decision(Action.BUFFER)),
        (OverlapPolicy.BUFFER_ONE, 1, True, Decision(Action.SKIP)),
        (OverlapPolicy.ALLOW_ALL, 3, False, Decision(Action.START)),
        (OverlapPolicy.CANCEL_OTHER, 1, False, Decision(Action.START, cancel_running=True)),
        (OverlapPolicy.CANCEL_OTHER, 0, False, Decision(Action.START)),
        (OverlapPolicy.unrecognized("TERMINATE_OTHER"), 1, False, Decision(Action.SKIP)),
    ],
)
def test_overlap_decisions(policy: OverlapPolicy, running: int, buffered: bool, decision: Decision) -> None:
    assert overlap_decision(policy, running=running, buffered=buffered) == decision


def test_the_key_of_a_fire_names_the_schedule_and_the_fire_time_in_utc() -> None:
    assert (
        fire_key("nightly", datetime.fromisoformat("2026-12-01T11:05:00+01:00"))
        == "schedule:nightly:2026-12-01T10:05:00Z"
    )


@pytest.mark.parametrize(
    ("cron", "timezone", "where"),
    [("* * *", "UTC", "schedule.cron"), ("* * * * *", "Nowhere/City", "schedule.timezone")],
)
def test_the_server_checks_name_the_field(cron: str, timezone: str, where: str) -> None:
    with pytest.raises(ValidationError) as refused:
        check_schedule(spec(cron, timezone))
    assert refused.value.field == where


@settings(deadline=None, max_examples=60)
@given(
    cron=st.sampled_from(["* * * * *", "*/7 * * * * *", "0 */2 * * *", "15,45 9-17 * * MON-FRI"]),
    timezone=st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe"]),
    cursor=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)),
    elapsed_s=st.integers(min_value=0, max_value=3 * 86400),
    window_s=st.integers(min_value=0, max_value=7200),
)
def test_every_fire_time_up_to_now_is_either_due_or_missed_once(
    cron: str, timezone: str, cursor: datetime, elapsed_s: int, window_s: int
) -> None:
    now = cursor + timedelta(seconds=elapsed_s)
    s = Schedule(
        spec=spec(cron, timezone, timedelta(seconds=window_s)), created_at=cursor, updated_at=cursor, cursor=cursor
    )
    handled: list[datetime] = []
    missed = 0
    while True:
        plan = due_fires(s, now, max_steps=500)
        assert plan.due == sorted(plan.due)
        assert all(timedelta(0) <= now - t <= max(timedelta(seconds=window_s), timedelta(seconds=1)) for t in plan.due)
        handled += plan.due
        missed += plan.missed
        s = Schedule(spec=s.spec, created_at=cursor, updated_at=cursor, cursor=plan.cursor)
        if not plan.more:
            break
    count = 0
    for t in fire_times(s.spec, cursor):
        if t > now:
            break
        count += 1
    assert len(handled) + missed == count
    assert len(set(handled)) == len(handled)
