"""Records as JSON values and scalars as integers: the encoding every store reuses.

Timestamps are integer microseconds since the Unix epoch (UTC); durations are integer microseconds
and must fit 64 bits; the parts of a record that a store keeps in a JSON column (reasons, payloads,
errors, progress, closings, retry policies, attempts) are plain JSON values, written compactly.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from taskwire.server.domain import (
    Attempt,
    AttemptOutcome,
    Closing,
    ErrorInfo,
    Payload,
    Progress,
    Reason,
    ReasonCode,
    RetryPolicy,
    State,
)

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
INT64_MAX: Final = 2**63 - 1


def datetime_to_db(value: datetime) -> int:
    """Microseconds since the Unix epoch. Refuses a naive datetime (its instant is unknown)."""
    if value.tzinfo is not UTC and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"naive datetime {value.isoformat()} cannot be stored; use a timezone-aware UTC datetime")
    # Whole microseconds, exactly; about twice as fast as `(value - EPOCH) // _MICROSECOND`.
    since = value - EPOCH
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


def datetime_from_db(value: int) -> datetime:
    """The aware UTC datetime of `datetime_to_db`."""
    return EPOCH + timedelta(microseconds=value)


def optional_datetime_to_db(value: datetime | None) -> int | None:
    return None if value is None else datetime_to_db(value)


def optional_datetime_from_db(value: int | None) -> datetime | None:
    return None if value is None else datetime_from_db(value)


def timedelta_to_db(value: timedelta) -> int:
    """Whole microseconds; a duration beyond ±292,000 years does not fit a 64-bit integer and is refused."""
    micros = value // _MICROSECOND
    if not -INT64_MAX <= micros <= INT64_MAX:
        raise ValueError(f"duration {value} is too long to store")
    return micros


def timedelta_from_db(value: int) -> timedelta:
    return timedelta(microseconds=value)


def optional_timedelta_to_db(value: timedelta | None) -> int | None:
    return None if value is None else timedelta_to_db(value)


def optional_timedelta_from_db(value: int | None) -> timedelta | None:
    return None if value is None else timedelta_from_db(value)


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- codec: parts as JSON values


def reason_to_json(reason: Reason) -> dict[str, Any]:
    return {"code": reason.code.value, "message": reason.message}


def reason_from_json(value: dict[str, Any]) -> Reason:
    return Reason(ReasonCode(value["code"]), value["message"])


def payload_to_json(payload: Payload) -> dict[str, Any]:
    return {"data": base64.b64encode(payload.data).decode("ascii"), "content_type": payload.content_type}


def payload_from_json(value: dict[str, Any]) -> Payload:
    return Payload(base64.b64decode(value["data"]), value["content_type"])


def error_info_to_json(error: ErrorInfo) -> dict[str, Any]:
    return {"type": error.type, "message": error.message, "retryable": error.retryable, "traceback": error.traceback}


def error_info_from_json(value: dict[str, Any]) -> ErrorInfo:
    return ErrorInfo(value["type"], value["message"], value["retryable"], value["traceback"])


def progress_to_json(progress: Progress) -> dict[str, Any]:
    return {"fraction": progress.fraction, "message": progress.message}


def progress_from_json(value: dict[str, Any]) -> Progress:
    return Progress(float(value["fraction"]), value["message"])


def closing_to_json(closing: Closing) -> dict[str, Any]:
    return {"state": closing.state.value, "reason": reason_to_json(closing.reason)}


def closing_from_json(value: dict[str, Any]) -> Closing:
    return Closing(State(value["state"]), reason_from_json(value["reason"]))


def retry_policy_to_json(policy: RetryPolicy) -> dict[str, Any]:
    return {
        "max_attempts": policy.max_attempts,
        "initial_interval_us": timedelta_to_db(policy.initial_interval),
        "backoff_coefficient": policy.backoff_coefficient,
        "maximum_interval_us": optional_timedelta_to_db(policy.maximum_interval),
        "non_retryable_error_types": list(policy.non_retryable_error_types),
    }


def retry_policy_from_json(value: dict[str, Any]) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=value["max_attempts"],
        initial_interval=timedelta_from_db(value["initial_interval_us"]),
        backoff_coefficient=float(value["backoff_coefficient"]),
        maximum_interval=optional_timedelta_from_db(value["maximum_interval_us"]),
        non_retryable_error_types=tuple(value["non_retryable_error_types"]),
    )


def attempt_to_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "task_run_id": attempt.task_run_id,
        "number": attempt.number,
        "worker_id": attempt.worker_id,
        "started_at": datetime_to_db(attempt.started_at),
        "outcome": attempt.outcome.value,
        "ended_at": optional_datetime_to_db(attempt.ended_at),
        "output": None if attempt.output is None else payload_to_json(attempt.output),
        "error": None if attempt.error is None else error_info_to_json(attempt.error),
    }


def attempt_from_json(value: dict[str, Any]) -> Attempt:
    return Attempt(
        task_run_id=value["task_run_id"],
        number=value["number"],
        worker_id=value["worker_id"],
        started_at=datetime_from_db(value["started_at"]),
        outcome=AttemptOutcome(value["outcome"]),
        ended_at=optional_datetime_from_db(value["ended_at"]),
        output=None if value["output"] is None else payload_from_json(value["output"]),
        error=None if value["error"] is None else error_info_from_json(value["error"]),
    )
