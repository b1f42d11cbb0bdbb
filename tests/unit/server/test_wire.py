"""taskwire.server.wire: records survive the trip to protobuf and back (through taskwire.common.wire)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from taskwire.server import wire
from taskwire.server.domain import JSON_CONTENT_TYPE, Attempt, Execution, Payload, RetryPolicy, TaskRun
from tests.unit.store.records import executions, task_runs

# The proto's Duration covers ±10,000 years and its int32 fields 2**31 - 1; the store's strategies go wider.
_MAX_DURATION = timedelta(days=3_650_000)


def _duration(value: timedelta | None) -> timedelta | None:
    return None if value is None else min(abs(value), _MAX_DURATION)


def _payload(value: Payload | None) -> Payload | None:
    # An empty content type means JSON on the wire, and comes back spelled out.
    return None if value is None else Payload(value.data, value.content_type or JSON_CONTENT_TYPE)


def _attempt(attempt: Attempt) -> Attempt:
    error = attempt.error
    if error is not None and not error.type:  # a nameless error is called "Error" on arrival
        error = dataclasses.replace(error, type="Error")
    if error is not None:  # a Duration holds at most 10,000 years
        error = dataclasses.replace(error, retry_after=_duration(error.retry_after))
    return dataclasses.replace(
        attempt, number=min(attempt.number, 2**31 - 1), output=_payload(attempt.output), error=error
    )


def _wire_safe(task_run: TaskRun) -> TaskRun:
    policy = task_run.retry_policy
    policy = RetryPolicy(
        max_attempts=min(max(policy.max_attempts, 0), 2**31 - 1),
        initial_interval=_duration(policy.initial_interval) or timedelta(seconds=1),
        backoff_coefficient=policy.backoff_coefficient,
        maximum_interval=_duration(policy.maximum_interval),
        non_retryable_error_types=policy.non_retryable_error_types,
    )
    return dataclasses.replace(
        task_run,
        input=_payload(task_run.input) or Payload(),
        timeout=_duration(task_run.timeout),
        retry_policy=policy,
        attempts=tuple(_attempt(attempt) for attempt in task_run.attempts),
    )


@settings(max_examples=40, deadline=None, derandomize=True)
@given(executions(), st.lists(task_runs(), max_size=3))
def test_an_execution_and_its_task_runs_survive_the_wire(execution: Execution, runs: list[TaskRun]) -> None:
    runs = [_wire_safe(task_run) for task_run in runs]
    assert wire.execution_from_proto(wire.execution_to_proto(execution, runs)) == (execution, tuple(runs))
