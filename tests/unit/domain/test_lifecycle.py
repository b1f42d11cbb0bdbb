"""Whole executions through the engine's loop: cancel, deadlines, failure propagation, dependencies, schedules."""

from __future__ import annotations

from datetime import timedelta

import pytest

from taskwire.server.domain import (
    AttemptOutcome,
    CancelAcknowledged,
    CancelGraceExpired,
    CancellationRequested,
    CancelOnWorker,
    Enqueue,
    ExecutionFinished,
    ExecutionFollowUp,
    ExecutionSettled,
    ExecutionSpec,
    ExecutionStarted,
    ExecutionTimeoutFired,
    InvalidTransition,
    Reason,
    ReasonCode,
    RetryPolicy,
    ScheduleDue,
    State,
    TaskDispatched,
    TaskFollowUp,
    TaskRunFinished,
    TaskSpec,
    plan_follow_ups,
)
from tests.unit.domain.factories import T0, Sim, at

P, R, W = State.PENDING, State.RUNNING, State.WAITING
S, F, C = State.SUCCESS, State.FAILED, State.CANCELLED


def spec(*tasks: TaskSpec, **fields: object) -> ExecutionSpec:
    return ExecutionSpec(tasks=tasks, **fields)  # type: ignore[arg-type]


def task(task_id: str, *depends_on: str, max_attempts: int = 1) -> TaskSpec:
    return TaskSpec(
        handler="tests.handler",
        task_id=task_id,
        depends_on=depends_on,
        retry_policy=RetryPolicy(max_attempts=max_attempts),
    )


def three_tasks() -> Sim:
    """a (running on w-a), b depends on a (WAITING), c (PENDING)."""
    sim = Sim.start(spec(task("a"), task("b", "a"), task("c")))
    sim.tick()
    sim.dispatch("a", "w-a")
    return sim


# ---- A single task ---------------------------------------------------------------------------------------


def test_single_task_from_submit_to_success() -> None:
    sim = Sim.start(spec(TaskSpec(handler="tests.handler")))
    assert sim.execution.state is P
    assert sim.states() == {"main": P}

    sim.tick()
    sim.dispatch("main")
    assert sim["main"].state is R
    assert sim.execution.state is R, "the first dispatch starts the execution"
    assert sim.execution.started_at == at(1)

    sim.tick()
    result = sim.succeed("main")
    assert sim["main"].state is S
    assert sim["main"].reason == Reason(ReasonCode.COMPLETED, "completed on attempt 1")
    assert result.effects[-1] == TaskRunFinished("tr-main", "ex-1", S)
    assert sim.execution.state is S
    assert sim.execution.reason is not None
    assert sim.execution.reason.code is ReasonCode.COMPLETED
    assert sim.execution.ended_at == at(2)
    assert sim.effects[-1] == ExecutionFinished("ex-1", S)
    assert plan_follow_ups(sim.execution, list(sim.task_runs.values())) == []


# ---- Cancellation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("settled_by", [CancelAcknowledged, CancelGraceExpired])
def test_cancel_propagates_and_ends_when_nothing_is_active(
    settled_by: type[CancelAcknowledged] | type[CancelGraceExpired],
) -> None:
    sim = three_tasks()
    sim.tick()
    first = sim.exec(CancellationRequested(message="stop please"))
    assert first.applied
    assert first.effects == (), "the follow-ups stop the task runs"

    cancelled = Reason(ReasonCode.EXECUTION_CANCELLED, "stop please")
    # Not running: cancelled at once (a queued one is dropped when the dispatcher reaches it).
    assert sim["b"].state is C
    assert sim["b"].reason == cancelled
    assert sim["c"].state is C
    assert sim["c"].reason == cancelled
    # Running: asked to stop on its worker, still RUNNING until the worker answers.
    assert sim["a"].state is R
    assert sim["a"].pending_cancel == cancelled
    assert sim.effects_of(CancelOnWorker) == [CancelOnWorker("tr-a", 1, "w-a", cancelled)]
    assert sim.execution.state is R
    assert sim.execution.closing is not None

    # Cancelling again is idempotent: nothing changes, nothing is sent again.
    effects_before = list(sim.effects)
    again = sim.exec(CancellationRequested(message="really stop"))
    assert not again.applied
    assert sim.effects == effects_before

    sim.tick()
    sim.task("a", settled_by(attempt=1))
    assert sim["a"].state is C
    assert sim["a"].reason == cancelled
    attempt = sim["a"].attempts[-1]
    assert attempt.outcome is AttemptOutcome.CANCELLED
    assert (attempt.error is None) == (settled_by is CancelAcknowledged)
    ended = sim.execution
    assert ended.state is C
    assert ended.reason == Reason(ReasonCode.CANCEL_REQUESTED, "stop please")
    assert ended.closing is None
    assert sim.effects[-1] == ExecutionFinished("ex-1", C)

    # A cancel of a finished execution is a no-op, not an error.
    late = sim.exec(CancellationRequested())
    assert not late.applied
    assert late.effects == ()


def test_cancel_with_nothing_running_ends_at_once() -> None:
    sim = Sim.start(spec(task("a"), task("b", "a")))
    sim.exec(CancellationRequested())
    assert sim.states() == {"a": C, "b": C}
    assert sim.execution.state is C
    assert sim.execution.started_at is None


def test_cancel_of_a_finished_execution_is_a_noop() -> None:
    sim = Sim.start(spec(task("a")))
    sim.dispatch("a")
    sim.succeed("a")
    before = sim.execution
    result = sim.exec(CancellationRequested())
    assert not result.applied
    assert sim.execution is before
    assert sim.execution.state is S


def test_a_task_that_completes_before_it_sees_the_cancel_still_succeeds() -> None:
    sim = Sim.start(spec(task("a")))
    sim.dispatch("a")
    sim.exec(CancellationRequested())
    assert sim["a"].pending_cancel is not None
    sim.succeed("a")
    assert sim["a"].state is S
    assert sim.execution.state is S, "every task succeeded: the work is done"


def test_a_failure_after_a_cancel_is_reported_as_the_cancel() -> None:
    sim = Sim.start(spec(task("a", max_attempts=3)))
    sim.dispatch("a")
    sim.exec(CancellationRequested())
    sim.fail("a")
    assert sim["a"].state is C, "a pending cancel wins over a retry"
    assert sim["a"].attempts[-1].outcome is AttemptOutcome.FAILED
    assert sim.execution.state is C


# ---- Execution deadline ----------------------------------------------------------------------------------


def test_execution_deadline_cancels_task_runs_and_fails_the_execution() -> None:
    sim = Sim.start(spec(task("a"), task("b", "a"), task("c"), timeout=timedelta(minutes=5)))
    assert sim.execution.deadline == T0 + timedelta(minutes=5)
    sim.dispatch("a", "w-a")
    sim.tick(300)
    sim.exec(ExecutionTimeoutFired())

    timed_out = Reason(ReasonCode.EXECUTION_TIMED_OUT, "the execution deadline passed")
    assert sim["b"].state is C
    assert sim["b"].reason == timed_out
    assert sim["c"].state is C
    assert sim["c"].reason == timed_out
    assert sim.effects_of(CancelOnWorker) == [CancelOnWorker("tr-a", 1, "w-a", timed_out)]
    assert sim.execution.state is R

    sim.task("a", CancelGraceExpired(attempt=1))
    assert sim["a"].state is C
    assert sim["a"].reason == timed_out
    assert sim.execution.state is F
    assert sim.execution.reason == timed_out


def test_the_first_cause_wins() -> None:
    sim = Sim.start(spec(task("a")))
    sim.dispatch("a")
    sim.exec(CancellationRequested())
    assert not sim.exec(ExecutionTimeoutFired()).applied
    sim.task("a", CancelAcknowledged(attempt=1))
    assert sim.execution.state is C


# ---- A failing task --------------------------------------------------------------------------------------


def test_a_failed_task_cancels_dependents_and_siblings_then_fails_the_execution() -> None:
    sim = Sim.start(spec(task("a"), task("b", "a"), task("c"), task("d"), task("e", "b")))
    sim.dispatch("a", "w-a")
    sim.dispatch("c", "w-c")
    sim.tick()
    sim.fail("a")

    assert sim["a"].state is F
    assert sim["a"].reason is not None
    assert sim["a"].reason.code is ReasonCode.HANDLER_ERROR
    upstream = ReasonCode.UPSTREAM_FAILED
    # Dependents: DependenciesFailed, transitively.
    for task_id in ("b", "e"):
        reason = sim[task_id].reason
        assert sim[task_id].state is C
        assert reason is not None
        assert reason.code is upstream
    # Each dependent names the dependency it was waiting for: e waited for b, which was cancelled.
    assert sim["b"].reason == Reason(upstream, "dependency 'a' did not succeed")
    assert sim["e"].reason == Reason(upstream, "dependency 'b' did not succeed")
    # Siblings: a queued one is cancelled at once, a running one is asked to stop.
    assert sim["d"].state is C
    assert sim["d"].reason is not None
    assert sim["d"].reason.code is upstream
    assert sim["c"].state is R
    assert sim["c"].pending_cancel is not None
    assert sim["c"].pending_cancel.code is upstream
    (stop,) = sim.effects_of(CancelOnWorker)
    assert stop == CancelOnWorker("tr-c", 1, "w-c", sim["c"].pending_cancel)
    # The execution fails only once nothing is active.
    assert sim.execution.state is R
    assert sim.execution.closing is not None
    assert sim.execution.closing.state is F

    sim.task("c", CancelAcknowledged(attempt=1))
    assert sim.execution.state is F
    assert sim.execution.reason is not None
    assert sim.execution.reason.code is ReasonCode.HANDLER_ERROR
    assert "'a'" in sim.execution.reason.message
    assert "boom" in sim.execution.reason.message


def test_a_cancel_after_a_failure_keeps_the_failure() -> None:
    sim = Sim.start(spec(task("a"), task("c")))
    sim.dispatch("a")
    sim.dispatch("c")
    sim.fail("a")
    assert not sim.exec(CancellationRequested()).applied
    sim.task("c", CancelAcknowledged(attempt=1))
    assert sim.execution.state is F


# ---- Dependencies ----------------------------------------------------------------------------------------


def test_diamond_releases_each_task_when_all_its_dependencies_succeeded() -> None:
    sim = Sim.start(spec(task("a"), task("b", "a"), task("c", "a"), task("d", "b", "c")))
    assert sim.states() == {"a": P, "b": W, "c": W, "d": W}
    for task_id in "bcd":
        reason = sim[task_id].reason
        assert reason is not None
        assert reason.code is ReasonCode.DEPENDENCIES

    sim.dispatch("a")
    sim.succeed("a")
    assert sim.states() == {"a": S, "b": P, "c": P, "d": W}
    assert sim.effects_of(Enqueue) == [Enqueue("tr-b"), Enqueue("tr-c")]

    sim.dispatch("b")
    sim.succeed("b")
    assert sim["d"].state is W, "c has not succeeded yet"

    sim.dispatch("c")
    sim.succeed("c")
    assert sim["d"].state is P
    assert sim["d"].reason is None

    sim.dispatch("d")
    sim.succeed("d")
    assert sim.execution.state is S


def test_a_waiting_task_cannot_be_dispatched() -> None:
    sim = Sim.start(spec(task("a"), task("b", "a")))
    with pytest.raises(InvalidTransition):
        sim.task("b", TaskDispatched(attempt=1, worker_id="w-1"))


# ---- Scheduled executions --------------------------------------------------------------------------------


def test_a_scheduled_execution_waits_then_releases_its_roots() -> None:
    not_before = at(60)
    sim = Sim.start(spec(task("a"), task("b", "a"), task("c"), not_before=not_before))
    assert sim.execution.state is W
    assert sim.execution.reason is not None
    assert sim.execution.reason.code is ReasonCode.SCHEDULED
    assert sim.execution.not_before == not_before
    for task_id in ("a", "c"):
        reason = sim[task_id].reason
        assert sim[task_id].state is W
        assert reason is not None
        assert reason.code is ReasonCode.SCHEDULED
        assert sim[task_id].not_before == not_before
    b_reason = sim["b"].reason
    assert b_reason is not None
    assert b_reason.code is ReasonCode.DEPENDENCIES
    assert plan_follow_ups(sim.execution, list(sim.task_runs.values())) == []

    sim.now = not_before
    released = sim.exec(ScheduleDue()).record
    assert released.state is P
    assert released.reason is None
    assert sim.states() == {"a": P, "b": W, "c": P}
    assert sim["a"].not_before is None
    assert sim.effects_of(Enqueue) == [Enqueue("tr-a"), Enqueue("tr-c")]


def test_a_schedule_in_the_past_starts_at_once() -> None:
    sim = Sim.start(spec(task("a"), not_before=T0 - timedelta(seconds=1)))
    assert sim.execution.state is P
    assert sim.execution.not_before is None
    assert sim["a"].state is P


def test_cancelling_a_scheduled_execution() -> None:
    sim = Sim.start(spec(task("a"), task("b", "a"), not_before=at(60)))
    sim.exec(CancellationRequested())
    assert sim.states() == {"a": C, "b": C}
    assert sim.execution.state is C


# ---- The plan itself -------------------------------------------------------------------------------------


def test_plan_asks_for_task_follow_ups_before_the_execution_event() -> None:
    sim = Sim.start(spec(task("a"), task("b", "a")))
    sim.task("a", TaskDispatched(attempt=1, worker_id="w-1"), settle=False)
    assert plan_follow_ups(sim.execution, list(sim.task_runs.values())) == [ExecutionFollowUp(ExecutionStarted())]
    sim.settle()
    sim.exec(CancellationRequested(), settle=False)
    follow_ups = plan_follow_ups(sim.execution, list(sim.task_runs.values()))
    assert [type(f) for f in follow_ups] == [TaskFollowUp, TaskFollowUp]
    assert {f.task_run_id for f in follow_ups if isinstance(f, TaskFollowUp)} == {"tr-a", "tr-b"}


def test_plan_settles_a_closing_execution_only_when_nothing_is_active() -> None:
    sim = Sim.start(spec(task("a")))
    sim.dispatch("a")
    sim.exec(CancellationRequested())
    assert plan_follow_ups(sim.execution, list(sim.task_runs.values())) == []
    sim.task("a", CancelAcknowledged(attempt=1), settle=False)
    assert plan_follow_ups(sim.execution, list(sim.task_runs.values())) == [ExecutionFollowUp(ExecutionSettled())]


def test_plan_has_nothing_to_say_about_a_finished_execution() -> None:
    sim = Sim.start(spec(task("a")))
    sim.exec(CancellationRequested())
    assert sim.execution.state is C
    assert plan_follow_ups(sim.execution, list(sim.task_runs.values())) == []
    assert sim.follow_ups_applied == 2  # the task's CancelRequested, then ExecutionSettled
