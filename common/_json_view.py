"""The stable, documented JSON view of executions, task runs and attempts.

This is what `taskwire get --json` prints and what scripts may rely on; see
docs/json-view.md. Rules: keys are snake_case and always present (null when
unknown), states and reason codes are their enum names, timestamps are
ISO-8601 UTC with a trailing "Z", durations are seconds as numbers, and JSON
payloads are inlined as JSON (other payloads as base64 with their content type).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ._models import Attempt, ErrorInfo, Execution, Reason, RetryPolicy, TaskRun
from ._payload import Payload, decode_payload

JSON_VIEW_VERSION = "taskwire.v1"

JsonObject = dict[str, Any]


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


def _reason(reason: Reason | None) -> JsonObject | None:
    return {"code": reason.code.value, "message": reason.message} if reason is not None else None


def payload_view(payload: Payload | None) -> Any:
    value = decode_payload(payload)
    if not isinstance(value, Payload):
        return value
    return {"content_type": value.content_type, "base64": base64.b64encode(value.data).decode("ascii")}


def _error(error: ErrorInfo | None) -> JsonObject | None:
    if error is None:
        return None
    return {
        "type": error.type,
        "message": error.message,
        "retryable": error.retryable,
        "traceback": error.traceback,
        "retry_after_s": _seconds(error.retry_after),
    }


def _retry_policy(policy: RetryPolicy) -> JsonObject:
    return {
        "max_attempts": policy.max_attempts,
        "initial_interval_s": _seconds(policy.initial_interval),
        "backoff_coefficient": policy.backoff_coefficient,
        "maximum_interval_s": _seconds(policy.effective_maximum_interval),
        "non_retryable_error_types": list(policy.non_retryable_error_types),
        "max_infrastructure_retries": policy.max_infrastructure_retries,
    }


def attempt_view(attempt: Attempt) -> JsonObject:
    return {
        "number": attempt.number,
        "worker_id": attempt.worker_id,
        "outcome": attempt.outcome.value,
        "started_at": iso(attempt.started_at),
        "ended_at": iso(attempt.ended_at),
        "output": payload_view(attempt.output),
        "error": _error(attempt.error),
    }


def task_run_view(task_run: TaskRun) -> JsonObject:
    progress = task_run.progress
    return {
        "id": task_run.id,
        "execution_id": task_run.execution_id,
        "task_id": task_run.task_id,
        "handler": task_run.handler,
        "state": task_run.state.value,
        "reason": _reason(task_run.reason),
        "input": payload_view(task_run.input),
        "depends_on": list(task_run.depends_on),
        "timeout_s": _seconds(task_run.timeout),
        "schedule_to_start_timeout_s": _seconds(task_run.schedule_to_start_timeout),
        "priority": task_run.priority,
        "concurrency_key": task_run.concurrency_key or None,
        "concurrency_limit": task_run.concurrency_limit or None,
        "fairness_key": task_run.fairness_key or None,
        "rate_limit": task_run.rate_limit or None,
        "rate_limit_key": task_run.rate_limit_key or None,
        "retry_policy": _retry_policy(task_run.retry_policy),
        "progress": {"fraction": progress.fraction, "message": progress.message} if progress else None,
        "not_before": iso(task_run.not_before),
        "cancel_requested": _reason(task_run.pending_cancel),
        "created_at": iso(task_run.created_at),
        "started_at": iso(task_run.started_at),
        "ended_at": iso(task_run.ended_at),
        "updated_at": iso(task_run.updated_at),
        "attempts": [attempt_view(attempt) for attempt in task_run.attempts],
    }


def execution_view(execution: Execution, task_runs: Sequence[TaskRun]) -> JsonObject:
    closing = execution.closing
    return {
        "version": JSON_VIEW_VERSION,
        "id": execution.id,
        "name": execution.name,
        "state": execution.state.value,
        "reason": _reason(execution.reason),
        "closing": {"state": closing.state.value, "reason": _reason(closing.reason)} if closing else None,
        "metadata": dict(execution.metadata),
        "idempotency_key": execution.idempotency_key or None,
        "deadline": iso(execution.deadline),
        "not_before": iso(execution.not_before),
        "created_at": iso(execution.created_at),
        "started_at": iso(execution.started_at),
        "ended_at": iso(execution.ended_at),
        "updated_at": iso(execution.updated_at),
        "task_runs": [task_run_view(task_run) for task_run in task_runs],
    }
