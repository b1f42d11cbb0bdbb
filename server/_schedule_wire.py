"""Schedules on the wire: `ScheduleSpec` messages to domain specs (errors name the field), `Schedule` records
to messages with their next fire times."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from taskwire.common.wire import duration_to_proto, execution_spec_to_proto, optional_duration, timestamp_to_proto
from taskwire.v1 import task_service_pb2 as tpb

from . import domain as d
from .wire import execution_spec_from_proto

_OVERLAP_TO_PROTO: dict[d.OverlapPolicy, tpb.OverlapPolicy.ValueType] = {
    d.OverlapPolicy.SKIP: tpb.OVERLAP_POLICY_SKIP,
    d.OverlapPolicy.BUFFER_ONE: tpb.OVERLAP_POLICY_BUFFER_ONE,
    d.OverlapPolicy.ALLOW_ALL: tpb.OVERLAP_POLICY_ALLOW_ALL,
    d.OverlapPolicy.CANCEL_OTHER: tpb.OVERLAP_POLICY_CANCEL_OTHER,
}
_OVERLAP_FROM_PROTO = {number: policy for policy, number in _OVERLAP_TO_PROTO.items()}
MAX_NEXT_FIRE_TIMES = 100


def overlap_from_proto(value: int, where: str = "schedule.overlap") -> d.OverlapPolicy:
    if value == tpb.OVERLAP_POLICY_UNSPECIFIED:
        return d.OverlapPolicy.SKIP
    policy: d.OverlapPolicy | None = _OVERLAP_FROM_PROTO.get(value)  # type: ignore[call-overload]
    if policy is None:
        raise d.ValidationError(where, f"unknown overlap policy {value}")
    return policy


def schedule_spec_from_proto(message: tpb.ScheduleSpec, where: str = "schedule") -> d.ScheduleSpec:
    if not message.HasField("execution"):
        raise d.ValidationError(f"{where}.execution", "required")
    window = optional_duration(message, "catch_up_window", f"{where}.catch_up_window")
    return d.ScheduleSpec(
        name=message.name,
        cron=message.cron,
        timezone=message.timezone,
        execution=execution_spec_from_proto(message.execution, f"{where}.execution"),
        catch_up_window=d.DEFAULT_CATCH_UP_WINDOW if window is None else window,
        overlap=overlap_from_proto(message.overlap, f"{where}.overlap"),
        paused=message.paused,
    )


def next_fire_count(requested: int, default: int, where: str = "next_fire_times") -> int:
    if not 0 <= requested <= MAX_NEXT_FIRE_TIMES:
        raise d.ValidationError(where, f"must be between 0 and {MAX_NEXT_FIRE_TIMES}, got {requested}")
    return requested or default


def schedule_to_proto(schedule: d.Schedule, next_fire_times: Sequence[datetime]) -> tpb.Schedule:
    spec = schedule.spec
    return tpb.Schedule(
        spec=tpb.ScheduleSpec(
            name=spec.name,
            cron=spec.cron,
            timezone=spec.timezone,
            execution=execution_spec_to_proto(spec.execution),
            catch_up_window=duration_to_proto(spec.catch_up_window),
            overlap=_OVERLAP_TO_PROTO.get(spec.overlap, tpb.OVERLAP_POLICY_UNSPECIFIED),
            paused=spec.paused,
        ),
        paused=schedule.paused,
        created_at=timestamp_to_proto(schedule.created_at),
        updated_at=timestamp_to_proto(schedule.updated_at),
        next_fire_times=[timestamp for t in next_fire_times if (timestamp := timestamp_to_proto(t)) is not None],
        fired=schedule.fired,
        missed=schedule.missed,
        skipped=schedule.skipped,
        running_execution_ids=list(schedule.running),
        buffered_fire_time=timestamp_to_proto(schedule.buffered),
        last_fire_time=timestamp_to_proto(schedule.last_fire_time),
        last_execution_id=schedule.last_execution_id,
        handled_until=timestamp_to_proto(schedule.cursor),
    )
