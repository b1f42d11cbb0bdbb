"""Records as JSON values and scalars as integers: the encoding every store reuses.

Timestamps are integer microseconds since the Unix epoch (UTC); durations are integer microseconds
and must fit 64 bits; the parts of a record that a store keeps in a JSON column (reasons, payloads,
errors, progress, closings, retry policies, attempts, dependencies, metadata) are plain JSON values,
written compactly. The texts of the columns that repeat across rows (retry policies, closings,
dependencies, metadata) are memoized both ways: most task runs of a server share a handful of them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

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

_T = TypeVar("_T")

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


# One encoder for every column: `json.dumps` with arguments builds a new one per call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: object) -> str:
    return _ENCODER.encode(value)


# --------------------------------------------------------------------------- parts as JSON values


def reason_to_json(reason: Reason) -> dict[str, Any]:
    return {"code": reason.code.value, "message": reason.message}


def reason_from_json(value: dict[str, Any]) -> Reason:
    return Reason(ReasonCode(value["code"]), value["message"])


def payload_to_json(payload: Payload) -> dict[str, Any]:
    return {"data": base64.b64encode(payload.data).decode("ascii"), "content_type": payload.content_type}


def payload_from_json(value: dict[str, Any]) -> Payload:
    return Payload(base64.b64decode(value["data"]), value["content_type"])


def error_info_to_json(error: ErrorInfo) -> dict[str, Any]:
    value = {"type": error.type, "message": error.message, "retryable": error.retryable, "traceback": error.traceback}
    if error.retry_after is not None:
        value["retry_after_us"] = timedelta_to_db(error.retry_after)
    return value


def error_info_from_json(value: dict[str, Any]) -> ErrorInfo:
    retry_after_us = value.get("retry_after_us")
    retry_after = None if retry_after_us is None else timedelta(microseconds=retry_after_us)
    return ErrorInfo(value["type"], value["message"], value["retryable"], value["traceback"], retry_after)


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
        "max_infrastructure_retries": policy.max_infrastructure_retries,
    }


_DEFAULT_POLICY = RetryPolicy()


def retry_policy_from_json(value: dict[str, Any]) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=value["max_attempts"],
        initial_interval=timedelta_from_db(value["initial_interval_us"]),
        backoff_coefficient=float(value["backoff_coefficient"]),
        maximum_interval=optional_timedelta_from_db(value["maximum_interval_us"]),
        non_retryable_error_types=tuple(value["non_retryable_error_types"]),
        # Absent from a row stored before the field existed: the default.
        max_infrastructure_retries=value.get("max_infrastructure_retries", _DEFAULT_POLICY.max_infrastructure_retries),
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
        **({"worker_identity": attempt.worker_identity} if attempt.worker_identity else {}),
        **({"worker_instance": attempt.worker_instance} if attempt.worker_instance else {}),
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
        worker_identity=value.get("worker_identity", ""),
        worker_instance=value.get("worker_instance", ""),
    )


# --------------------------------------------------------------------------- JSON columns as text


class Memo:
    """A small cache from a key to its (immutable) value, emptied when full. Safe to share between threads.

    Only values that equal keys always map to, exactly (same JSON text in, same record out), are memoized.
    """

    __slots__ = ("_limit", "_values")

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._values: dict[Any, Any] = {}

    def get(self, key: Any, make: Callable[[Any], _T]) -> _T:
        try:
            return self._values[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        value = make(key)
        values = self._values
        if len(values) >= self._limit:
            values.clear()
        values[key] = value
        return value


# Decoding: column text → decoded value.
_retry_policies_from_text: Final = Memo()
_depends_on_from_text: Final = Memo()
_metadata_from_text: Final = Memo()  # values are dicts: callers get a copy
_closings_from_text: Final = Memo()
# Encoding: value → column text.
_retry_policies_to_text: Final = Memo()
_depends_on_to_text: Final = Memo()
_metadata_to_text: Final = Memo()
_closings_to_text: Final = Memo()


def _retry_policy_text(policy: RetryPolicy) -> str:
    return dumps(retry_policy_to_json(policy))


def retry_policy_to_text(policy: RetryPolicy) -> str:
    # Equal policies share a text only when their fields encode alike: 0.0 == -0.0 and True == 1 do not.
    if type(policy.max_attempts) is int and type(policy.backoff_coefficient) is float and policy.backoff_coefficient:
        return _retry_policies_to_text.get(policy, _retry_policy_text)
    return _retry_policy_text(policy)


def _parse_retry_policy(text: str) -> RetryPolicy:
    return retry_policy_from_json(json.loads(text))


def retry_policy_from_text(text: str) -> RetryPolicy:
    return _retry_policies_from_text.get(text, _parse_retry_policy)


def _json_list(value: tuple[str, ...]) -> str:
    return dumps(list(value))


def depends_on_to_text(depends_on: tuple[str, ...]) -> str:
    if not depends_on:
        return "[]"
    if type(depends_on) is not tuple:
        return _json_list(tuple(depends_on))
    return _depends_on_to_text.get(depends_on, _json_list)


def _tuple_from_text(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def depends_on_from_text(text: str) -> tuple[str, ...]:
    if text == "[]":
        return ()
    return _depends_on_from_text.get(text, _tuple_from_text)


def _metadata_text(items: tuple[tuple[str, str], ...]) -> str:
    return dumps(dict(items))


def metadata_to_text(metadata: Any) -> str:
    if not metadata:
        return "{}"
    items = tuple(metadata.items())
    if len(items) > 8:
        return dumps(dict(items))
    return _metadata_to_text.get(items, _metadata_text)


def metadata_from_text(text: str) -> dict[str, str]:
    if text == "{}":
        return {}
    if len(text) > 512:
        return json.loads(text)  # type: ignore[no-any-return]
    return dict(_metadata_from_text.get(text, json.loads))


def _closing_text(closing: Closing) -> str:
    return dumps(closing_to_json(closing))


def closing_to_text(closing: Closing) -> str:
    return _closings_to_text.get(closing, _closing_text)


def _parse_closing(text: str) -> Closing:
    return closing_from_json(json.loads(text))


def closing_from_text(text: str) -> Closing:
    return _closings_from_text.get(text, _parse_closing)


def attempts_to_text(attempts: tuple[Attempt, ...]) -> str:
    if not attempts:
        return "[]"
    return dumps([attempt_to_json(attempt) for attempt in attempts])


def attempts_from_text(text: str) -> tuple[Attempt, ...]:
    if text == "[]":
        return ()
    return tuple(attempt_from_json(value) for value in json.loads(text))
