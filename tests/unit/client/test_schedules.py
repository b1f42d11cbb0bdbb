"""The SDK's schedule values without a server: overlap policies on the wire (a newer one kept by name), the
read model from a message, and the durations the CLI reads."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from taskwire.client import OverlapPolicy, ValidationError
from taskwire.client._cli_schedules import duration
from taskwire.client._schedules import (
    create_request,
    overlap_from_proto,
    overlap_to_proto,
    schedule_from_proto,
    schedule_spec,
)
from taskwire.common import wire
from taskwire.v1 import task_service_pb2 as tpb


@pytest.mark.parametrize("policy", list(OverlapPolicy))
def test_overlap_policies_round_trip(policy: OverlapPolicy) -> None:
    assert overlap_from_proto(overlap_to_proto(policy)) is policy
    assert overlap_to_proto(policy.value.lower().replace("_", "-")) == overlap_to_proto(policy)


def test_an_overlap_policy_from_a_newer_server_is_kept_by_its_number() -> None:
    newer = overlap_from_proto(42)
    assert (newer.value, newer.is_known) == ("UNKNOWN(42)", False)
    assert overlap_from_proto(tpb.OVERLAP_POLICY_UNSPECIFIED) is OverlapPolicy.SKIP


def test_an_unknown_overlap_policy_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as refused:
        overlap_to_proto("sometimes")
    assert refused.value.field == "schedule.overlap"


def test_the_read_model_and_the_request() -> None:
    spec = schedule_spec("nightly", "0 3 * * *", "report", {"since": 1}, timezone="Europe/Paris", max_attempts=3)
    request = create_request(spec)
    assert (request.schedule.name, request.schedule.timezone) == ("nightly", "Europe/Paris")
    assert request.schedule.execution.tasks[0].retry_policy.max_attempts == 3
    at = datetime(2026, 12, 2, 2, tzinfo=UTC)
    message = tpb.Schedule(spec=request.schedule, fired=4, missed=1, last_execution_id="e4")
    wire.set_timestamp(message.next_fire_times.add(), at)
    info = schedule_from_proto(message)
    assert (info.handlers, info.next_fire_times, info.catch_up_window) == (("report",), (at,), timedelta(minutes=1))
    view = info.to_json()
    assert (view["fired"], view["missed"], view["next_fire_times"]) == (4, 1, ["2026-12-02T02:00:00.000000Z"])
    assert view["execution"]["tasks"][0]["handler"] == "report"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("60s", 60), ("1.5m", 90), ("2h", 7200), ("1d", 86400), ("500ms", 0.5)]
)
def test_durations_on_the_command_line(text: str, seconds: float) -> None:
    assert duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["soon", "-5s", "5 weeks", ""])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)
