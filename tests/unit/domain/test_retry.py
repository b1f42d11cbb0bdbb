"""Retries: the retry policy's decisions, task-level timeouts and lost leases (its arithmetic: tests.unit.common)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from taskwire.common import DEFAULT_INFRASTRUCTURE_RETRIES, WORKER_SHUTDOWN_ERROR
from taskwire.server.domain import (
    MAX_RETRY_AFTER,
    ArmAttemptTimeout,
    Attempt,
    AttemptEnded,
    AttemptOutcome,
    CancelOnWorker,
    Enqueue,
    ErrorInfo,
    ExecutionSpec,
    LeaseExpired,
    Reason,
    ReasonCode,
    RetryDue,
    RetryPolicy,
    ScheduleRetry,
    State,
    TaskDispatched,
    TaskFailed,
    TaskRun,
    TaskRunFinished,
    TaskSpec,
    TaskTimedOut,
    Transition,
    attempts_used,
    infrastructure_failure,
    infrastructure_failures,
    transition_task_run,
)
from tests.unit.domain.factories import ERROR, Sim, at, make_task_run

P, R, W = State.PENDING, State.RUNNING, State.WAITING
S, F, C = State.SUCCESS, State.FAILED, State.CANCELLED


# ---- The retry policy's decisions ------------------------------------------------------------------------


def running(policy: RetryPolicy, *, timeout: timedelta | None = None) -> TaskRun:
    return make_task_run(R, retry_policy=policy, timeout=timeout)


def test_failure_waits_for_the_backoff_then_becomes_pending_then_exhausts() -> None:
    record = running(RetryPolicy(max_attempts=3))

    failed = transition_task_run(record, TaskFailed(attempt=1, error=ERROR), at(10))
    waiting = failed.record
    assert waiting.state is W
    assert waiting.reason is not None
    assert waiting.reason.code is ReasonCode.RETRY_BACKOFF
    assert "attempt 2 of 3" in waiting.reason.message
    assert waiting.not_before == at(11)
    assert failed.effects == (AttemptEnded("tr-1", 1), ScheduleRetry("tr-1", at(11)))
    assert waiting.attempts[0].outcome is AttemptOutcome.FAILED
    assert waiting.attempts[0].error == ERROR
    assert waiting.attempts[0].ended_at == at(10)

    due = transition_task_run(waiting, RetryDue(), at(11))
    assert due.record.state is P
    assert due.record.reason is None
    assert due.record.not_before is None
    assert due.effects == (Enqueue("tr-1"),)

    second = transition_task_run(due.record, TaskDispatched(attempt=2, worker_id="w-2"), at(12)).record
    again = transition_task_run(second, TaskFailed(attempt=2, error=ERROR), at(13))
    assert again.record.not_before == at(15), "the second backoff is twice the first"

    third = transition_task_run(again.record, RetryDue(), at(15)).record
    third = transition_task_run(third, TaskDispatched(attempt=3, worker_id="w-1"), at(16)).record
    exhausted = transition_task_run(third, TaskFailed(attempt=3, error=ERROR), at(17))
    assert exhausted.record.state is F
    assert exhausted.record.reason is not None
    assert exhausted.record.reason.code is ReasonCode.RETRIES_EXHAUSTED
    assert "3 of 3 attempts" in exhausted.record.reason.message
    assert [a.outcome for a in exhausted.record.attempts] == [AttemptOutcome.FAILED] * 3
    assert exhausted.effects == (AttemptEnded("tr-1", 3), TaskRunFinished("tr-1", "ex-1", F))


def test_backoff_counts_from_the_last_change_when_the_clock_goes_back() -> None:
    record = running(RetryPolicy(max_attempts=2))  # updated at at(1)
    failed = transition_task_run(record, TaskFailed(attempt=1, error=ERROR), at(0))
    assert failed.record.updated_at == at(1)
    assert failed.record.not_before == at(2)


def test_a_single_attempt_fails_with_handler_error() -> None:
    result = transition_task_run(running(RetryPolicy(max_attempts=1)), TaskFailed(attempt=1, error=ERROR), at(10))
    assert result.record.state is F
    assert result.record.reason is not None
    assert result.record.reason.code is ReasonCode.HANDLER_ERROR
    assert "ValueError: boom" in result.record.reason.message
    assert not any(isinstance(effect, ScheduleRetry) for effect in result.effects)


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        (RetryPolicy(max_attempts=5), ErrorInfo(type="ValueError", message="bad input", retryable=False)),
        (
            RetryPolicy(max_attempts=5, non_retryable_error_types=("KeyError", "ValueError")),
            ErrorInfo(type="ValueError", message="bad input"),
        ),
    ],
    ids=["marked-by-handler", "listed-in-policy"],
)
def test_non_retryable_errors_fail_at_once(policy: RetryPolicy, error: ErrorInfo) -> None:
    result = transition_task_run(running(policy), TaskFailed(attempt=1, error=error), at(10))
    assert result.record.state is F
    assert result.record.reason is not None
    assert result.record.reason.code is ReasonCode.NON_RETRYABLE_ERROR
    assert "not retryable" in result.record.reason.message


def test_an_error_type_not_listed_is_retried() -> None:
    policy = RetryPolicy(max_attempts=2, non_retryable_error_types=("KeyError",))
    result = transition_task_run(running(policy), TaskFailed(attempt=1, error=ERROR), at(10))
    assert result.record.state is W


def test_allows_retry_of() -> None:
    policy = RetryPolicy(non_retryable_error_types=("KeyError",))
    assert policy.allows_retry_of(None)
    assert policy.allows_retry_of(ERROR)
    assert not policy.allows_retry_of(ErrorInfo(type="KeyError", message="k"))
    assert not policy.allows_retry_of(ErrorInfo(type="ValueError", message="v", retryable=False))


# ---- Task-level timeouts ---------------------------------------------------------------------------------


def test_dispatch_arms_the_attempt_timeout() -> None:
    record = make_task_run(P, timeout=timedelta(seconds=30))
    result = transition_task_run(record, TaskDispatched(attempt=1, worker_id="w-1"), at(5))
    assert result.effects == (ArmAttemptTimeout("tr-1", 1, at(35)),)


def test_no_timeout_arms_nothing() -> None:
    result = transition_task_run(make_task_run(P), TaskDispatched(attempt=1, worker_id="w-1"), at(5))
    assert result.effects == ()


@pytest.mark.parametrize(("max_attempts", "state"), [(1, F), (2, W)])
def test_a_timed_out_attempt_is_stopped_on_its_worker_then_retried_or_failed(max_attempts: int, state: State) -> None:
    record = running(RetryPolicy(max_attempts=max_attempts), timeout=timedelta(seconds=30))
    result = transition_task_run(record, TaskTimedOut(attempt=1), at(31))

    attempt = result.record.attempts[0]
    assert attempt.outcome is AttemptOutcome.TIMED_OUT
    assert attempt.error is not None
    assert attempt.error.type == "TimeoutError"
    assert "30s" in attempt.error.message
    stops = [effect for effect in result.effects if isinstance(effect, CancelOnWorker)]
    assert stops == [CancelOnWorker("tr-1", 1, "w-1", Reason(ReasonCode.TIMED_OUT, attempt.error.message))]
    assert result.record.state is state
    assert result.record.reason is not None
    assert result.record.reason.code is (ReasonCode.TIMED_OUT if state is F else ReasonCode.RETRY_BACKOFF)


def test_timeouts_until_the_last_attempt_fail_with_timed_out() -> None:
    sim = Sim.start(
        ExecutionSpec(
            tasks=(TaskSpec(handler="h", timeout=timedelta(seconds=30), retry_policy=RetryPolicy(max_attempts=2)),)
        )
    )
    sim.dispatch("main")
    sim.tick(30)
    sim.task("main", TaskTimedOut(attempt=1))
    assert sim["main"].state is W
    sim.tick(1)
    sim.task("main", RetryDue())
    sim.dispatch("main")
    sim.tick(30)
    sim.task("main", TaskTimedOut(attempt=2))
    assert sim["main"].state is F
    assert sim.execution.state is F
    assert sim.execution.reason is not None
    assert sim.execution.reason.code is ReasonCode.TIMED_OUT


# ---- Lost leases -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_a_lost_lease_is_retried_whatever_max_attempts(max_attempts: int) -> None:
    result = transition_task_run(running(RetryPolicy(max_attempts=max_attempts)), LeaseExpired(attempt=1), at(20))
    attempt = result.record.attempts[0]
    assert attempt.outcome is AttemptOutcome.LOST
    assert attempt.error is not None
    assert "w-1" in attempt.error.message
    assert result.record.state is W
    assert result.record.reason is not None
    assert result.record.reason.code is ReasonCode.RETRY_BACKOFF
    assert "infrastructure retry 1 of 3" in result.record.reason.message
    assert f"attempt 1 of {max_attempts}" in result.record.reason.message, "the handler's budget is untouched"
    assert result.effects[0] == AttemptEnded("tr-1", 1)
    assert not any(isinstance(effect, CancelOnWorker) for effect in result.effects), "the worker is gone"


# ---- Failures that are not the handler's fault --------------------------------------------------------

SHUTDOWN = ErrorInfo(type=WORKER_SHUTDOWN_ERROR, message="the worker shut down before the handler finished")


def _lose(sim: Sim) -> Transition[TaskRun]:
    return sim.task("main", LeaseExpired(attempt=sim.current("main")))


def _shut_down(sim: Sim) -> Transition[TaskRun]:
    return sim.fail("main", SHUTDOWN)


@pytest.mark.parametrize(
    ("end", "code"),
    [(_lose, ReasonCode.WORKER_LOST), (_shut_down, ReasonCode.WORKER_SHUTDOWN)],
    ids=["lost", "shutdown"],
)
@pytest.mark.parametrize("retries", [DEFAULT_INFRASTRUCTURE_RETRIES, 0, 1])
def test_infrastructure_failures_have_their_own_budget_and_code(
    end: Callable[[Sim], Transition[TaskRun]], code: ReasonCode, retries: int
) -> None:
    default = retries == DEFAULT_INFRASTRUCTURE_RETRIES
    policy = RetryPolicy() if default else RetryPolicy(max_infrastructure_retries=retries)
    assert policy.max_infrastructure_retries == retries
    sim = Sim.start(ExecutionSpec(tasks=(TaskSpec(handler="h", retry_policy=policy),)))
    for _ in range(retries):
        sim.dispatch("main")
        assert end(sim).record.state is W
        sim.tick(60)
        sim.task("main", RetryDue())
    sim.dispatch("main")
    final = end(sim).record
    assert final.state is F
    assert final.reason is not None
    assert final.reason.code is code
    assert f"{retries} of {retries} infrastructure retries used" in final.reason.message
    assert sim.execution.state is F
    assert sim.execution.reason is not None
    assert sim.execution.reason.code is code


def test_a_handler_error_after_an_infrastructure_retry_follows_the_handlers_policy() -> None:
    sim = Sim.start(ExecutionSpec(tasks=(TaskSpec(handler="h"),)))  # the default: a single attempt
    sim.dispatch("main")
    _lose(sim)
    sim.tick(60)
    sim.task("main", RetryDue())
    sim.dispatch("main")
    final = sim.fail("main").record
    assert final.state is F
    assert final.reason is not None
    assert final.reason.code is ReasonCode.HANDLER_ERROR
    assert "1 of 1 attempts used" in final.reason.message


def test_an_infrastructure_retry_then_success() -> None:
    sim = Sim.start(ExecutionSpec(tasks=(TaskSpec(handler="h"),)))
    sim.dispatch("main")
    _shut_down(sim)
    sim.tick(60)
    sim.task("main", RetryDue())
    sim.dispatch("main", worker_id="w-2")
    assert sim.succeed("main").record.state is S
    assert sim.execution.state is S


def test_what_each_attempt_costs() -> None:
    def attempt(n: int, outcome: AttemptOutcome, error: ErrorInfo | None = None) -> Attempt:
        return Attempt(
            task_run_id="tr-1", number=n, worker_id="w", started_at=at(n), outcome=outcome, ended_at=at(n), error=error
        )

    refused = ErrorInfo(type="SlotsExhausted", message="busy")
    attempts = (
        attempt(1, AttemptOutcome.LOST),
        attempt(2, AttemptOutcome.FAILED, SHUTDOWN),
        attempt(3, AttemptOutcome.FAILED, refused),
        attempt(4, AttemptOutcome.FAILED, ERROR),
        attempt(5, AttemptOutcome.TIMED_OUT),
    )
    assert [infrastructure_failure(a) for a in attempts] == [
        ReasonCode.WORKER_LOST,
        ReasonCode.WORKER_SHUTDOWN,
        None,
        None,
        None,
    ]
    assert attempts_used(attempts) == 2
    assert infrastructure_failures(attempts) == 2


def test_retries_exhausted_fails_the_execution_with_that_reason() -> None:
    sim = Sim.start(ExecutionSpec(tasks=(TaskSpec(handler="h", retry_policy=RetryPolicy(max_attempts=2)),)))
    sim.dispatch("main")
    sim.fail("main")
    assert sim.execution.state is R, "a task waiting for its retry keeps the execution running"
    sim.tick(1)
    sim.task("main", RetryDue())
    sim.dispatch("main")
    sim.fail("main")
    assert sim.execution.state is F
    assert sim.execution.reason is not None
    assert sim.execution.reason.code is ReasonCode.RETRIES_EXHAUSTED


# ---- A remote rate limit -------------------------------------------------------------------------------


def _rate_limited(seconds: float) -> ErrorInfo:
    return ErrorInfo("RateLimited", "429 from the remote side", retry_after=timedelta(seconds=seconds))


def test_a_remote_rate_limit_waits_as_asked_and_spends_no_attempt() -> None:
    record = running(RetryPolicy(max_attempts=1))
    limited = transition_task_run(record, TaskFailed(attempt=1, error=_rate_limited(30)), at(10))
    waiting = limited.record
    assert waiting.state is W
    assert waiting.reason is not None
    assert waiting.reason.code is ReasonCode.RETRY_BACKOFF
    assert "rate limited by the remote side: retry after 30s" in waiting.reason.message
    assert "no attempt spent" in waiting.reason.message
    assert waiting.not_before == at(40)
    assert ScheduleRetry(record.id, at(40)) in limited.effects
    assert attempts_used(waiting.attempts) == 0

    # With its one attempt still unspent, a real failure after the retry ends it as the handler's.
    pending = transition_task_run(waiting, RetryDue(), at(40)).record
    again = transition_task_run(pending, TaskDispatched(attempt=2, worker_id="w"), at(41)).record
    failed = transition_task_run(again, TaskFailed(attempt=2, error=ERROR), at(42)).record
    assert failed.state is F
    assert failed.reason is not None
    assert failed.reason.code is ReasonCode.HANDLER_ERROR


def test_a_remote_rate_limit_of_thousands_of_years_waits_the_longest_a_spec_may() -> None:
    record = running(RetryPolicy(max_attempts=1))
    limited = transition_task_run(record, TaskFailed(attempt=1, error=_rate_limited(3_000_000 * 86_400)), at(10))
    assert limited.record.state is W
    assert limited.record.not_before == at(10) + MAX_RETRY_AFTER


def test_a_cancel_pending_wins_over_a_remote_rate_limit() -> None:
    record = make_task_run(R, pending_cancel=Reason(ReasonCode.CANCEL_REQUESTED, "stop"))
    assert transition_task_run(record, TaskFailed(attempt=1, error=_rate_limited(5)), at(10)).record.state is C
