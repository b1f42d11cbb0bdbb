"""Retries with backoff, recorded attempt by attempt; non-retryable errors fail at once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from taskwire.client import AttemptOutcome, Client, ReasonCode, RetryPolicy, State
from tests.harness import Cluster, ServerProcess
from tests.integration.workers.support import (
    FINISH,
    Collector,
    ended,
    error_type,
    only_run,
    outcomes,
    reason_code,
    transitions,
)


def test_a_retryable_error_is_retried_with_backoff_until_the_attempts_are_used_up(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    procs.worker(server, slots=2, name="failer")
    policy = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=0.3), backoff_coefficient=2.0)
    execution = client.submit("fail", {"message": "try again", "type": "Flaky"}, retry_policy=policy)
    collector = Collector(server, execution.id)
    done = client.wait_finished(execution.id, FINISH)

    assert done.state is State.FAILED, done
    assert reason_code(done) is ReasonCode.RETRIES_EXHAUSTED, done.reason
    run = only_run(done)
    assert reason_code(run) is ReasonCode.RETRIES_EXHAUSTED, run.reason
    assert [attempt.number for attempt in run.attempts] == [1, 2, 3]
    assert outcomes(run) == [AttemptOutcome.FAILED] * 3, run.attempts
    for attempt in run.attempts:
        assert attempt.worker_id == "failer"
        assert attempt.error is not None, attempt
        assert (attempt.error.type, attempt.error.message, attempt.error.retryable) == ("Flaky", "try again", True)
        assert "Flaky: try again" in attempt.error.traceback
        assert attempt.started_at <= ended(attempt)
    for before, after in zip(run.attempts, run.attempts[1:], strict=False):
        gap = after.started_at - ended(before)
        assert gap >= policy.delay_after(before.number), (before.number, gap)

    # The history tells the same story: RUNNING → WAITING(RETRY_BACKOFF) twice, then FAILED.
    changes = [(t.to_state, t.reason.code if t.reason else None, t.attempt) for t in transitions(collector.join())]
    assert changes == [
        (State.RUNNING, None, 1),
        (State.WAITING, ReasonCode.RETRY_BACKOFF, 1),
        (State.PENDING, None, 1),
        (State.RUNNING, None, 2),
        (State.WAITING, ReasonCode.RETRY_BACKOFF, 2),
        (State.PENDING, None, 2),
        (State.RUNNING, None, 3),
        (State.FAILED, ReasonCode.RETRIES_EXHAUSTED, 3),
    ]


@pytest.mark.parametrize(
    ("error", "non_retryable_types"),
    [
        pytest.param({"type": "Fatal", "retryable": False}, (), id="the-handler-says-so"),
        pytest.param({"type": "Fatal", "retryable": True}, ("Fatal",), id="the-policy-says-so"),
    ],
)
def test_a_non_retryable_error_fails_at_once(
    procs: Cluster, server: ServerProcess, client: Client, error: dict[str, object], non_retryable_types: tuple[str]
) -> None:
    procs.worker(server, slots=1, name="failer")
    policy = RetryPolicy(
        max_attempts=5, initial_interval=timedelta(seconds=0.1), non_retryable_error_types=non_retryable_types
    )
    execution = client.submit("fail", {"message": "give up", **error}, retry_policy=policy)
    done = client.wait_finished(execution.id, FINISH)

    assert done.state is State.FAILED, done
    assert reason_code(done) is ReasonCode.NON_RETRYABLE_ERROR, done.reason
    run = only_run(done)
    assert reason_code(run) is ReasonCode.NON_RETRYABLE_ERROR, run.reason
    (attempt,) = run.attempts
    assert attempt.outcome is AttemptOutcome.FAILED
    assert attempt.worker_id == "failer"
    assert error_type(attempt) == "Fatal", attempt
