"""Schedules in the SDK: the `ScheduleInfo` read model and the requests of the schedule calls, free of I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.json_format import MessageToDict

from taskwire.common import (
    DEFAULT_CATCH_UP_WINDOW,
    ExecutionSpec,
    OverlapPolicy,
    RetryPolicy,
    ScheduleSpec,
    ValidationError,
    iso,
    wire,
)
from taskwire.v1 import task_service_pb2 as tpb

from ._common import expect, request, single_task_spec

_OVERLAP_PREFIX = "OVERLAP_POLICY_"


def overlap_to_proto(policy: OverlapPolicy | str) -> tpb.OverlapPolicy.ValueType:
    """The wire value of an overlap policy (by name: SKIP, BUFFER_ONE, ALLOW_ALL, CANCEL_OTHER)."""
    name = (policy.value if isinstance(policy, OverlapPolicy) else str(policy)).strip().upper().replace("-", "_")
    try:
        return tpb.OverlapPolicy.Value(_OVERLAP_PREFIX + name)
    except ValueError:
        choices = ", ".join(p.value for p in OverlapPolicy)
        raise ValidationError("schedule.overlap", f"unknown overlap policy {name!r}; choose from {choices}") from None


def overlap_from_proto(value: int) -> OverlapPolicy:
    """An overlap policy from the wire; one from a newer server is kept by its name."""
    if value == tpb.OVERLAP_POLICY_UNSPECIFIED:
        return OverlapPolicy.SKIP
    try:
        name = tpb.OverlapPolicy.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return OverlapPolicy.unrecognized(f"UNKNOWN({value})")
    return OverlapPolicy.unrecognized(name.removeprefix(_OVERLAP_PREFIX))


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as the server reported it, with its next fire times (UTC)."""

    name: str
    cron: str
    timezone: str
    overlap: OverlapPolicy
    catch_up_window: timedelta
    paused: bool
    handlers: tuple[str, ...]  # of the execution it starts, one per task
    execution: Mapping[str, Any]  # the execution spec it starts, in protobuf's JSON mapping
    created_at: datetime | None = None
    updated_at: datetime | None = None
    next_fire_times: tuple[datetime, ...] = ()
    fired: int = 0
    missed: int = 0
    skipped: int = 0
    running_execution_ids: tuple[str, ...] = ()
    buffered_fire_time: datetime | None = None
    last_fire_time: datetime | None = None
    last_execution_id: str = ""
    handled_until: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON view `taskwire schedule get --json` prints."""
        return {
            "name": self.name,
            "cron": self.cron,
            "timezone": self.timezone,
            "overlap": self.overlap.value,
            "catch_up_window_s": self.catch_up_window.total_seconds(),
            "paused": self.paused,
            "handlers": list(self.handlers),
            "execution": dict(self.execution),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "next_fire_times": [iso(t) for t in self.next_fire_times],
            "fired": self.fired,
            "missed": self.missed,
            "skipped": self.skipped,
            "running_execution_ids": list(self.running_execution_ids),
            "buffered_fire_time": iso(self.buffered_fire_time),
            "last_fire_time": iso(self.last_fire_time),
            "last_execution_id": self.last_execution_id,
            "handled_until": iso(self.handled_until),
        }


def schedule_from_proto(message: tpb.Schedule) -> ScheduleInfo:
    spec = message.spec
    window = wire.optional_duration(spec, "catch_up_window")
    return ScheduleInfo(
        name=spec.name,
        cron=spec.cron,
        timezone=spec.timezone or "UTC",
        overlap=overlap_from_proto(spec.overlap),
        catch_up_window=DEFAULT_CATCH_UP_WINDOW if window is None else window,
        paused=message.paused,
        handlers=tuple(task.handler for task in spec.execution.tasks),
        execution=MessageToDict(spec.execution, preserving_proto_field_name=True),
        created_at=wire.optional_timestamp(message, "created_at"),
        updated_at=wire.optional_timestamp(message, "updated_at"),
        next_fire_times=tuple(wire.timestamp_from_proto(t) for t in message.next_fire_times),
        fired=message.fired,
        missed=message.missed,
        skipped=message.skipped,
        running_execution_ids=tuple(message.running_execution_ids),
        buffered_fire_time=wire.optional_timestamp(message, "buffered_fire_time"),
        last_fire_time=wire.optional_timestamp(message, "last_fire_time"),
        last_execution_id=message.last_execution_id,
        handled_until=wire.optional_timestamp(message, "handled_until"),
        metadata=dict(spec.execution.metadata),
    )


def schedule_spec(
    name: str,
    cron: str,
    handler: str,
    input: Any = None,
    *,
    timezone: str = "UTC",
    catch_up_window: timedelta = DEFAULT_CATCH_UP_WINDOW,
    overlap: OverlapPolicy | str = OverlapPolicy.SKIP,
    paused: bool = False,
    timeout: timedelta | None = None,
    max_attempts: int | None = None,
    max_infrastructure_retries: int | None = None,
    retry_policy: RetryPolicy | None = None,
    execution_name: str | None = None,
    metadata: Mapping[str, str] | None = None,
    execution_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
) -> ScheduleSpec:
    """The spec of a schedule that starts one task, as `submit` would submit it."""
    execution = single_task_spec(
        handler,
        input,
        timeout=timeout,
        max_attempts=max_attempts,
        max_infrastructure_retries=max_infrastructure_retries,
        retry_policy=retry_policy,
        name=execution_name,
        metadata=metadata,
        execution_timeout=execution_timeout,
        schedule_to_start_timeout=schedule_to_start_timeout,
    )
    policy = overlap if isinstance(overlap, OverlapPolicy) else OverlapPolicy.unrecognized(str(overlap).upper())
    return ScheduleSpec(
        name=name,
        cron=cron,
        execution=execution,
        timezone=timezone,
        catch_up_window=catch_up_window,
        overlap=policy,
        paused=paused,
    )


def create_request(spec: ScheduleSpec) -> tpb.CreateScheduleRequest:
    expect(spec, ScheduleSpec, "the schedule")
    execution: ExecutionSpec = spec.execution
    return tpb.CreateScheduleRequest(
        schedule=request(
            tpb.ScheduleSpec,
            name=spec.name,
            cron=spec.cron,
            timezone=spec.timezone,
            execution=wire.execution_spec_to_proto(execution),
            catch_up_window=wire.duration_to_proto(spec.catch_up_window, "catch_up_window"),
            overlap=overlap_to_proto(spec.overlap),
            paused=spec.paused,
        )
    )
