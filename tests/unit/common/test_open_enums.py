"""Values from a newer version: pseudo-members that are kept and shown, records that carry them as they came."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from taskwire.common import (
    Attempt,
    AttemptOutcome,
    Closing,
    LogLevel,
    OpenEnum,
    Reason,
    ReasonCode,
    State,
    execution_view,
)
from tests.unit.domain.factories import at, make_execution, make_task_run

PAUSED = State.unrecognized("PAUSED")


@pytest.mark.parametrize("enum", [State, ReasonCode, AttemptOutcome, LogLevel])
def test_a_pseudo_member_is_kept_by_name_and_made_once(enum: type[OpenEnum]) -> None:
    member = enum.unrecognized("FROM_THE_FUTURE")
    assert (member.name, member.value, str(member), f"{member}") == ("FROM_THE_FUTURE",) * 4
    assert isinstance(member, enum)
    assert not member.is_known
    assert member not in list(enum)
    assert enum.unrecognized("FROM_THE_FUTURE") is member


@pytest.mark.parametrize("enum", [State, ReasonCode, AttemptOutcome, LogLevel])
def test_members_are_known_and_unrecognized_finds_them(enum: type[OpenEnum]) -> None:
    for member in enum:
        assert member.is_known
        assert enum.unrecognized(member.name) is member


def test_parsing_text_stays_strict() -> None:
    """Only the converter makes pseudo-members: a typo in a filter or a bad stored value is still an error."""
    assert State.unrecognized("PAUSED") is PAUSED
    with pytest.raises(ValueError, match="PAUSED"):
        State("PAUSED")


def test_pseudo_members_survive_pickle_and_copy() -> None:
    assert pickle.loads(pickle.dumps(PAUSED)) is PAUSED
    assert pickle.loads(pickle.dumps(State.FAILED)) is State.FAILED
    assert copy.deepcopy(PAUSED) is PAUSED


def test_an_unknown_state_is_neither_terminal_nor_one_of_the_known_ones() -> None:
    assert not PAUSED.is_terminal
    assert PAUSED.is_active
    assert all(PAUSED is not member and member != PAUSED for member in State)


def test_records_carry_unknown_values_as_they_came() -> None:
    """A newer server's record passes; the checks that would need to understand the value are skipped."""
    future_reason = Reason(ReasonCode.unrecognized("QUOTA_EXCEEDED"), "over quota")
    execution = make_execution(State.PENDING)
    paused = dataclasses.replace(execution, state=PAUSED, reason=future_reason)
    assert paused.state is PAUSED
    # A known terminal state with a reason code from the future, and a closing made of unknown values.
    failed = dataclasses.replace(execution, state=State.FAILED, reason=future_reason, ended_at=at(1), updated_at=at(1))
    assert failed.reason == future_reason
    assert Closing(PAUSED, future_reason).state is PAUSED
    # An attempt that ended in an outcome this version does not know, in a task run in a known state.
    attempt = Attempt("tr-1", 1, "w-1", at(0), outcome=AttemptOutcome.unrecognized("PREEMPTED"))
    run = dataclasses.replace(make_task_run(State.RUNNING), attempts=(attempt,))
    assert run.attempts[0].outcome.name == "PREEMPTED"


def test_known_values_are_still_checked() -> None:
    execution = make_execution(State.PENDING)
    with pytest.raises(ValueError, match="needs a reason"):
        dataclasses.replace(execution, state=State.FAILED, reason=None, ended_at=at(1), updated_at=at(1))
    with pytest.raises(ValueError, match="timestamps out of order"):
        dataclasses.replace(execution, state=PAUSED, started_at=at(5), updated_at=at(1))


def test_terminal_in_a_newer_state_is_read_from_ended_at() -> None:
    execution = make_execution(State.PENDING)
    assert not dataclasses.replace(execution, state=PAUSED).is_terminal
    expired = dataclasses.replace(execution, state=State.unrecognized("EXPIRED"), ended_at=at(1), updated_at=at(1))
    assert expired.is_terminal
    assert make_execution(State.SUCCESS).is_terminal
    run = make_task_run(State.PENDING)
    assert dataclasses.replace(run, state=PAUSED, ended_at=run.updated_at).is_terminal


def test_the_json_view_shows_unknown_values_by_name() -> None:
    reason = Reason(ReasonCode.unrecognized("UNKNOWN(42)"), "why")
    execution = dataclasses.replace(make_execution(State.PENDING), state=PAUSED, reason=reason)
    view = execution_view(execution, [])
    assert (view["state"], view["reason"]) == ("PAUSED", {"code": "UNKNOWN(42)", "message": "why"})
