"""Schedules: an execution spec started on a cron schedule, what a client asks for and what the server keeps.

A schedule's spec is an `ExecutionSpec` without an idempotency key (each fire gets one made of the
schedule's name and the fire time, `fire_key`) and without `not_before` (the cron says when). The cron
expression and the time zone are checked by the server (`taskwire.server.domain`); everything else is
checked here, naming the field (`schedule.catch_up_window`), whatever client sent it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from ._errors import ValidationError
from ._specs import ExecutionSpec, Limits, validate_execution_spec
from ._states import OpenEnum

# The metadata labels every execution a schedule starts carries.
SCHEDULE_LABEL: Final = "taskwire.schedule"
FIRE_TIME_LABEL: Final = "taskwire.schedule.fire_time"
DEFAULT_CATCH_UP_WINDOW: Final = timedelta(minutes=1)
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
MAX_CRON_CHARS: Final = 256
MAX_TIMEZONE_CHARS: Final = 64


class OverlapPolicy(OpenEnum):
    """What a fire does while an execution the schedule started earlier has not finished."""

    SKIP = "SKIP"  # the fire is skipped (counted)
    BUFFER_ONE = "BUFFER_ONE"  # the fire waits for the running one to end; one waits at most, later ones skip
    ALLOW_ALL = "ALLOW_ALL"  # the fire starts anyway
    CANCEL_OTHER = "CANCEL_OTHER"  # the running ones are cancelled and the fire starts at once


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What a client asks for: start `execution` at each time `cron` names, in `timezone`."""

    name: str
    cron: str
    execution: ExecutionSpec
    timezone: str = "UTC"
    # Fires missed while the server was down are started late when at most this old; older ones are counted missed.
    catch_up_window: timedelta = DEFAULT_CATCH_UP_WINDOW
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    paused: bool = False  # created paused: it fires once resumed


@dataclass(frozen=True, slots=True)
class Schedule:
    """A stored schedule and what it has done. Times are UTC."""

    spec: ScheduleSpec
    created_at: datetime
    updated_at: datetime
    # Every fire time up to this one is handled: started, buffered, skipped or missed. Fires come after it.
    cursor: datetime
    paused: bool = False
    fired: int = 0  # executions started (triggers included)
    missed: int = 0  # fire times that passed beyond the catch-up window (or found the queue full)
    skipped: int = 0  # fire times the overlap policy skipped
    running: tuple[str, ...] = ()  # ids of executions it started that may not have finished, oldest first
    buffered: datetime | None = None  # BUFFER_ONE: the fire time waiting for the running execution to end
    last_fire_time: datetime | None = None  # of the latest execution started
    last_execution_id: str = ""

    @property
    def name(self) -> str:
        return self.spec.name


def fire_time_text(fire_time: datetime) -> str:
    """A fire time as the label and the key show it: UTC, ISO 8601, `2026-12-01T10:05:00Z`."""
    stamp = fire_time.astimezone(UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + (f".{stamp.microsecond:06d}" if stamp.microsecond else "") + "Z"


def fire_key(name: str, fire_time: datetime, *, trigger: bool = False) -> str:
    """The idempotency key of the execution a fire starts: one execution per schedule and fire time."""
    return f"schedule:{name}:{'trigger:' if trigger else ''}{fire_time_text(fire_time)}"


def validate_schedule_name(name: str, where: str = "name") -> str:
    if not _NAME.fullmatch(name):
        raise ValidationError(where, f"{name!r} must be 1-128 characters of [A-Za-z0-9_.-]")
    return name


def validate_schedule_spec(spec: ScheduleSpec, limits: Limits, where: str = "schedule") -> ScheduleSpec:
    """Check every field but the cron expression's and the time zone's meaning (the server's); return the spec
    with defaults filled in, or raise ValidationError naming the field."""
    validate_schedule_name(spec.name, f"{where}.name")
    cron = spec.cron.strip()
    if not cron:
        raise ValidationError(f"{where}.cron", "required, e.g. '*/5 * * * *'")
    if len(cron) > MAX_CRON_CHARS:
        raise ValidationError(f"{where}.cron", f"at most {MAX_CRON_CHARS} characters")
    timezone = spec.timezone.strip() or "UTC"
    if len(timezone) > MAX_TIMEZONE_CHARS:
        raise ValidationError(f"{where}.timezone", f"at most {MAX_TIMEZONE_CHARS} characters")
    window = spec.catch_up_window
    if window < timedelta(0):
        raise ValidationError(f"{where}.catch_up_window", f"must not be negative, got {window.total_seconds():g}s")
    if window > limits.max_duration:
        raise ValidationError(f"{where}.catch_up_window", f"must be at most {limits.max_duration.days} days")
    if not spec.overlap.is_known:
        raise ValidationError(f"{where}.overlap", f"unknown overlap policy {spec.overlap.value}")
    execution = spec.execution
    if execution.idempotency_key:
        raise ValidationError(
            f"{where}.execution.idempotency_key", "must be empty: each fire's key is made of the schedule and fire time"
        )
    if execution.not_before is not None:
        raise ValidationError(f"{where}.execution.not_before", "must be unset: the cron expression says when")
    for label in (SCHEDULE_LABEL, FIRE_TIME_LABEL):
        if label in execution.metadata:
            raise ValidationError(f"{where}.execution.metadata", f"{label!r} is set by the schedule")
    execution = validate_execution_spec(execution, limits, f"{where}.execution")
    if len(execution.metadata) + 2 > limits.max_metadata_entries:
        raise ValidationError(
            f"{where}.execution.metadata", f"at most {limits.max_metadata_entries - 2} entries (the schedule adds 2)"
        )
    return replace(spec, cron=cron, timezone=timezone, execution=execution)
