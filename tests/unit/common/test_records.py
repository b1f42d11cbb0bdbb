"""Records refuse to exist in an impossible shape, and their timestamps follow the rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import product
from typing import Any

import pytest

from taskwire.common import (
    TERMINAL_REASONS,
    WAITING_REASONS,
    Attempt,
    AttemptOutcome,
    Closing,
    ExecutionSpec,
    Reason,
    ReasonCode,
    RetryPolicy,
    State,
    TaskSpec,
    evolve,
)
from taskwire.server.domain import (
    CancelRequested,
    RetryDue,
    TaskDispatched,
    TaskFailed,
    TaskProgressed,
    TaskRunEvent,
    transition_task_run,
)
from tests.unit.domain.factories import (
    CANCEL_REASON,
    CLOSING_CANCELLED,
    ERROR,
    T0,
    Sim,
    at,
    make_attempt,
    make_execution,
    make_task_run,
)

P, R, W = State.PENDING, State.RUNNING, State.WAITING
S, F, C = State.SUCCESS, State.FAILED, State.CANCELLED

# A record changed as the engine changes it (`evolve`) or as `dataclasses.replace` does: both check alike.
Change = Callable[..., Any]


@pytest.fixture(params=[dataclasses.replace, evolve], ids=["replace", "evolve"])
def change(request: pytest.FixtureRequest) -> Change:
    return request.param  # type: ignore[no-any-return]


# ---- Reasons ---------------------------------------------------------------------------------------------


def _allowed(state: State, code: ReasonCode) -> bool:
    if state is W:
        return code in WAITING_REASONS
    return code in TERMINAL_REASONS[state]


STATE_REASON_PAIRS = list(product([W, S, F, C], ReasonCode))


@pytest.mark.parametrize(("state", "code"), STATE_REASON_PAIRS, ids=[f"{s}-{c}" for s, c in STATE_REASON_PAIRS])
def test_each_state_takes_only_its_own_reasons(state: State, code: ReasonCode) -> None:
    task_run = make_task_run(state, waiting_for=ReasonCode.DEPENDENCIES)
    execution = make_execution(state)
    for record in (task_run, execution):
        changed: Any = record
        if _allowed(state, code):
            assert dataclasses.replace(changed, reason=Reason(code, "why")).reason == Reason(code, "why")
        else:
            with pytest.raises(ValueError, match="needs a reason among"):
                dataclasses.replace(changed, reason=Reason(code, "why"))


@pytest.mark.parametrize("state", [W, S, F, C])
def test_waiting_and_terminal_records_need_a_reason(state: State) -> None:
    with pytest.raises(ValueError, match=r"needs a reason"):
        dataclasses.replace(make_task_run(state), reason=None)
    with pytest.raises(ValueError, match=r"needs a reason"):
        dataclasses.replace(make_execution(state), reason=None)


@pytest.mark.parametrize("state", list(State))
def test_a_reason_needs_a_message(state: State) -> None:
    record = make_task_run(state)
    code = record.reason.code if record.reason is not None else ReasonCode.COMPLETED
    with pytest.raises(ValueError, match="human message"):
        dataclasses.replace(record, reason=Reason(code, ""))


def test_waiting_reasons_and_terminal_reasons_do_not_overlap() -> None:
    for state, codes in TERMINAL_REASONS.items():
        assert state.is_terminal
        assert not codes & WAITING_REASONS
    assert set(TERMINAL_REASONS) == {S, F, C}
    assert set().union(*TERMINAL_REASONS.values()) | WAITING_REASONS == set(ReasonCode)


# ---- Attempts --------------------------------------------------------------------------------------------


def test_running_needs_a_running_attempt(change: Change) -> None:
    running = make_task_run(R)
    with pytest.raises(ValueError, match="exactly one attempt runs"):
        change(running, attempts=())
    ended = make_attempt(1, AttemptOutcome.FAILED, started=1)
    with pytest.raises(ValueError, match="exactly one attempt runs"):
        change(running, attempts=(ended,))


@pytest.mark.parametrize("state", [P, S, F, C])
def test_only_running_has_a_running_attempt(state: State, change: Change) -> None:
    record = make_task_run(state)
    with pytest.raises(ValueError, match="exactly one attempt runs"):
        change(record, attempts=(make_attempt(1, AttemptOutcome.RUNNING, started=1),))


def test_at_most_one_attempt_runs_and_it_is_the_latest(change: Change) -> None:
    running = make_task_run(R)
    one, two = make_attempt(1, AttemptOutcome.RUNNING, started=1), make_attempt(2, AttemptOutcome.RUNNING, started=1)
    with pytest.raises(ValueError, match="exactly one attempt runs"):
        change(running, attempts=(one, two))
    with pytest.raises(ValueError, match="only the latest attempt"):
        change(running, attempts=(one, make_attempt(2, AttemptOutcome.FAILED, started=1)))


def test_a_pending_cancel_exists_only_while_running(change: Change) -> None:
    assert make_task_run(R, pending_cancel=CANCEL_REASON).pending_cancel == CANCEL_REASON
    with pytest.raises(ValueError, match="pending cancel"):
        change(make_task_run(P), pending_cancel=CANCEL_REASON)


def test_attempts_check_themselves() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Attempt(task_run_id="tr-1", number=0, worker_id="w", started_at=T0)
    with pytest.raises(ValueError, match="ended_at exactly when"):
        Attempt(task_run_id="tr-1", number=1, worker_id="w", started_at=T0, ended_at=at(1))
    with pytest.raises(ValueError, match="ended_at exactly when"):
        Attempt(task_run_id="tr-1", number=1, worker_id="w", started_at=T0, outcome=AttemptOutcome.FAILED)
    with pytest.raises(ValueError, match="cannot end before"):
        Attempt(task_run_id="tr-1", number=1, worker_id="w", started_at=at(1), outcome=AttemptOutcome.LOST, ended_at=T0)


# ---- Executions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [S, F, C])
def test_a_terminal_execution_is_not_closing(state: State) -> None:
    with pytest.raises(ValueError, match="not closing"):
        make_execution(state, closing=CLOSING_CANCELLED)


def test_closing_takes_only_reasons_of_its_state() -> None:
    with pytest.raises(ValueError, match="is not a reason for"):
        Closing(C, Reason(ReasonCode.HANDLER_ERROR, "boom"))
    with pytest.raises(ValueError, match="is not a reason for"):
        Closing(W, Reason(ReasonCode.SCHEDULED, "later"))
    assert Closing(F, Reason(ReasonCode.EXECUTION_TIMED_OUT, "late")).state is F


# ---- Timestamps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"started_at": T0 - timedelta(seconds=1)},  # started before created
        {"updated_at": T0 - timedelta(seconds=1)},  # updated before created
        {"ended_at": at(0.5)},  # ended before started
        {"updated_at": at(1.5)},  # updated before ended
        {"started_at": None, "ended_at": T0 - timedelta(seconds=1)},  # ended before created, never started
    ],
)
def test_timestamps_out_of_order_are_refused(changes: dict[str, Any], change: Change) -> None:
    record: Any = make_task_run(F)  # created T0, started at(1), ended at(2), updated at(2)
    with pytest.raises(ValueError, match="out of order"):
        change(record, **changes)
    execution: Any = make_execution(F)
    with pytest.raises(ValueError, match="out of order"):
        change(execution, **changes)


def test_ended_at_is_set_exactly_when_terminal(change: Change) -> None:
    with pytest.raises(ValueError, match="ended_at is set exactly when"):
        change(make_task_run(F), ended_at=None)
    with pytest.raises(ValueError, match="ended_at is set exactly when"):
        change(make_task_run(P), ended_at=at(1), updated_at=at(1))
    with pytest.raises(ValueError, match="ended_at is set exactly when"):
        change(make_execution(R), ended_at=at(1))


def test_task_run_timestamps_through_retries() -> None:
    """created_at once; started_at at the first dispatch only; updated_at on every change; ended_at at the end."""
    record = make_task_run(P, retry_policy=RetryPolicy(max_attempts=2))
    steps: list[tuple[TaskRunEvent, datetime]] = [
        (TaskDispatched(attempt=1, worker_id="w-1"), at(10)),
        (TaskProgressed(attempt=1, fraction=0.5), at(11)),
        (TaskFailed(attempt=1, error=ERROR), at(12)),
        (RetryDue(), at(13)),
        (TaskDispatched(attempt=2, worker_id="w-2"), at(14)),
        (CancelRequested(CANCEL_REASON), at(15)),
        (TaskFailed(attempt=2, error=ERROR), at(16)),
    ]
    for event, now in steps:
        before = record
        result = transition_task_run(record, event, now)
        assert result.applied
        record = result.record
        assert record.created_at == T0
        assert record.updated_at == now, type(event).__name__
        assert record.started_at == at(10)
        assert (record.ended_at is not None) == record.state.is_terminal
        assert before.ended_at is None
    assert record.state is C
    assert record.ended_at == at(16)
    assert [a.started_at for a in record.attempts] == [at(10), at(14)]

    replay = transition_task_run(record, TaskFailed(attempt=2, error=ERROR), at(99))
    assert replay.record.updated_at == at(16), "a no-op touches nothing"


def test_timestamps_never_go_back_when_the_clock_does() -> None:
    record = make_task_run(P)
    record = transition_task_run(record, TaskDispatched(attempt=1, worker_id="w-1"), at(10)).record
    record = transition_task_run(record, TaskProgressed(attempt=1, fraction=0.2), at(5)).record
    assert record.updated_at == at(10)
    record = transition_task_run(record, TaskFailed(attempt=1, error=ERROR), at(3)).record
    assert record.state is F
    assert record.started_at == at(10)
    assert record.ended_at == at(10)
    assert record.updated_at == at(10)
    assert record.attempts[0].ended_at == at(10), "an attempt cannot end before it started"


def test_execution_timestamps() -> None:
    sim = Sim.start(ExecutionSpec(tasks=(TaskSpec(handler="h"),)), now=T0)
    assert sim.execution.created_at == sim.execution.updated_at == T0
    assert sim.execution.started_at is None
    sim.now = at(5)
    sim.dispatch("main")
    assert sim.execution.started_at == at(5)
    assert sim.execution.updated_at == at(5)
    sim.now = at(9)
    sim.succeed("main")
    assert sim.execution.started_at == at(5)
    assert sim.execution.ended_at == sim.execution.updated_at == at(9)
    assert sim.execution.created_at == T0
