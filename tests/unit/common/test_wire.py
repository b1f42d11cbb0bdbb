"""taskwire.common.wire reads what a newer server sends without raising, and writes it back as it came."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from taskwire.common import AttemptOutcome, LogLevel, Payload, Reason, ReasonCode, State, ValidationError, wire
from taskwire.server import wire as server_wire
from taskwire.v1 import types_pb2 as pb
from tests.unit.client.records import execution_proto, snapshot, task_run

FUTURE = 42  # a number no descriptor of this version knows


def test_every_member_has_a_wire_number_and_comes_back() -> None:
    for state in State:
        assert wire.execution_state_from_proto(wire.execution_state_to_proto(state)) is state
        assert wire.task_run_state_from_proto(wire.task_run_state_to_proto(state)) is state
    for code in ReasonCode:
        assert wire.reason_code_from_proto(wire.reason_code_to_proto(code)) is code
    for outcome in AttemptOutcome:
        assert wire.outcome_from_proto(wire.outcome_to_proto(outcome)) is outcome


@pytest.mark.parametrize(
    ("read", "unspecified"),
    [
        (wire.execution_state_from_proto, "UNSPECIFIED"),
        (wire.task_run_state_from_proto, "UNSPECIFIED"),
        (wire.reason_code_from_proto, None),
        (wire.outcome_from_proto, None),
        (wire.log_level_from_proto, LogLevel.INFO),
    ],
)
def test_numbers_this_version_does_not_know_become_pseudo_members(read: object, unspecified: object) -> None:
    assert callable(read)
    member = read(FUTURE)
    assert member.value == f"UNKNOWN({FUTURE})"
    assert not member.is_known
    assert read(FUTURE) is member
    # The zero value: "no value" where the field allows none, else named as the descriptor names it.
    zero = read(0)
    assert zero == unspecified


def test_a_number_the_descriptor_knows_is_named_by_it() -> None:
    """The stubs may be newer than this code's enum: the wire's name is kept (here the UNSPECIFIED value)."""
    state = wire.execution_state_from_proto(pb.EXECUTION_STATE_UNSPECIFIED)
    assert (state.value, state.is_known) == ("UNSPECIFIED", False)


def test_pseudo_members_go_back_as_the_number_they_came_with() -> None:
    assert wire.execution_state_to_proto(wire.execution_state_from_proto(FUTURE)) == FUTURE
    assert wire.reason_code_to_proto(wire.reason_code_from_proto(FUTURE)) == FUTURE
    assert wire.execution_state_to_proto(State.unrecognized("UNSPECIFIED")) == pb.EXECUTION_STATE_UNSPECIFIED
    with pytest.raises(ValueError, match="PAUSED has no wire number"):
        wire.execution_state_to_proto(State.unrecognized("PAUSED"))


def test_an_execution_from_a_newer_server_is_read_without_raising() -> None:
    message = execution_proto(snapshot(State.FAILED, task_run(state=State.FAILED)))
    message.state = FUTURE  # type: ignore[assignment]
    message.reason_code = FUTURE + 1  # type: ignore[assignment]
    message.closing.state = FUTURE  # type: ignore[assignment]
    message.closing.reason.code = FUTURE  # type: ignore[assignment]
    message.closing.reason.message = "closing for a reason from the future"
    run = message.task_runs[0]
    run.state = FUTURE  # type: ignore[assignment]
    run.reason_code = FUTURE  # type: ignore[assignment]
    run.attempts[0].outcome = FUTURE  # type: ignore[assignment]
    execution, (read_run,) = wire.execution_from_proto(message)
    assert execution.state.value == "UNKNOWN(42)"
    assert execution.reason == Reason(ReasonCode.unrecognized("UNKNOWN(43)"), message.reason_message)
    assert execution.closing is not None
    assert (execution.closing.state.value, execution.closing.reason.code.value) == ("UNKNOWN(42)", "UNKNOWN(42)")
    assert execution.is_terminal, "ended_at is set: the newer state is terminal"
    assert (read_run.state.value, read_run.attempts[0].outcome.value) == ("UNKNOWN(42)", "UNKNOWN(42)")
    # The server's writer puts the same numbers back.
    assert server_wire.execution_to_proto(execution, (read_run,)) == message


def test_scalars() -> None:
    assert wire.payload_from_proto(pb.Payload(data=b"1")) == Payload(b"1")
    assert wire.duration_from_proto(duration_pb2.Duration(seconds=1, nanos=500_000_000)) == timedelta(seconds=1.5)
    assert wire.struct_to_proto({}) is None
    struct = wire.struct_to_proto({"a": [1, "b"]})
    assert struct is not None
    assert wire.struct_from_proto(struct) == {"a": [1, "b"]}


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)))
def test_set_timestamp_matches_from_datetime_exactly(value: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value)
    converted = timestamp_pb2.Timestamp()
    wire.set_timestamp(converted, value)
    assert converted == expected
    assert wire.timestamp_from_proto(converted) == value


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.integers(min_value=-62_135_596_800, max_value=253_402_300_799) | st.sampled_from([-62_135_596_800, -1, 0]),
    st.integers(min_value=0, max_value=999_999_999) | st.sampled_from([0, 999, 1_000, 999_999_999]),
)
def test_timestamp_from_proto_matches_to_datetime_exactly(seconds: int, nanos: int) -> None:
    message = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    converted = wire.timestamp_from_proto(message)
    assert converted == message.ToDatetime(tzinfo=UTC)
    assert converted.tzinfo is UTC


def test_task_runs_sharing_a_policy_get_their_own_copies() -> None:
    first, second = server_wire.task_run_to_proto(task_run()), server_wire.task_run_to_proto(task_run())
    first.retry_policy.max_attempts = 99
    assert second.retry_policy.max_attempts != 99
    assert server_wire.task_run_to_proto(task_run()).retry_policy == second.retry_policy


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (Payload(b"x", content_type=5), TypeError, "input.content_type must hold text (str), got int 5"),  # type: ignore[arg-type]
        (Payload("text"), TypeError, "input.data must be bytes, got str 'text'"),  # type: ignore[arg-type]
        (Payload(b"x", content_type="\ud800"), ValidationError, "input.content_type: '\\ud800' is not valid text"),
    ],
)
def test_a_payload_protobuf_refuses_is_named(payload: Payload, error: type, message: str) -> None:
    with pytest.raises(error) as raised:
        wire.payload_to_proto(payload)
    assert message in str(raised.value)
