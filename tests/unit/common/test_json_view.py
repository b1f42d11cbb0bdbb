"""The JSON view is a stable contract: exact keys, names not numbers, UTC "Z" timestamps, payloads readable."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from taskwire.common import (
    JSON_VIEW_VERSION,
    ErrorInfo,
    ExecutionSpec,
    Payload,
    RetryPolicy,
    TaskSpec,
    attempt_view,
    execution_view,
    iso,
    payload_view,
    task_run_view,
)
from taskwire.server.domain import CancellationRequested, RetryDue, TaskFailed, TaskProgressed
from tests.unit.domain.factories import T0, Sim

EXECUTION_KEYS = {
    "version",
    "id",
    "name",
    "state",
    "reason",
    "closing",
    "metadata",
    "idempotency_key",
    "deadline",
    "not_before",
    "created_at",
    "started_at",
    "ended_at",
    "updated_at",
    "task_runs",
}
TASK_RUN_KEYS = {
    "id",
    "execution_id",
    "task_id",
    "handler",
    "state",
    "reason",
    "input",
    "depends_on",
    "timeout_s",
    "schedule_to_start_timeout_s",
    "priority",
    "concurrency_key",
    "concurrency_limit",
    "fairness_key",
    "rate_limit",
    "rate_limit_key",
    "retry_policy",
    "progress",
    "not_before",
    "cancel_requested",
    "created_at",
    "started_at",
    "ended_at",
    "updated_at",
    "attempts",
}
ATTEMPT_KEYS = {"number", "worker_id", "outcome", "started_at", "ended_at", "output", "error"}
REASON_KEYS = {"code", "message"}
ERROR_KEYS = {"type", "message", "retryable", "traceback", "retry_after_s"}
RETRY_POLICY_KEYS = {
    "max_attempts",
    "initial_interval_s",
    "backoff_coefficient",
    "maximum_interval_s",
    "non_retryable_error_types",
    "max_infrastructure_retries",
}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
TIMESTAMP_KEYS = {"created_at", "started_at", "ended_at", "updated_at", "deadline", "not_before"}


def busy_execution() -> Sim:
    """One execution with something in every corner: retries, progress, a binary input, a pending cancel."""
    sim = Sim.start(
        ExecutionSpec(
            name="nightly",
            metadata={"team": "data"},
            timeout=timedelta(hours=1),
            idempotency_key="nightly-2030-01-01",
            tasks=(
                TaskSpec(
                    "etl.extract",
                    task_id="extract",
                    input=Payload(b'{"day": "2030-01-01", "limit": 10}'),
                    timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(max_attempts=3, non_retryable_error_types=("KeyError",)),
                ),
                TaskSpec(
                    "etl.load",
                    task_id="load",
                    depends_on=("extract",),
                    input=Payload(b"\x00\x01binary", content_type="application/octet-stream"),
                ),
            ),
        )
    )
    sim.tick()
    sim.dispatch("extract", "w-1")
    sim.tick()
    sim.task("extract", TaskFailed(attempt=1, error=ErrorInfo("ConnectionError", "reset", traceback="Traceback...")))
    sim.tick()
    sim.task("extract", RetryDue())
    sim.dispatch("extract", "w-2")
    sim.task("extract", TaskProgressed(attempt=2, fraction=0.25, message="a quarter"))
    sim.tick()
    sim.exec(CancellationRequested(message="operator stop"))
    return sim


def view_of(sim: Sim) -> dict[str, Any]:
    return execution_view(sim.execution, list(sim.task_runs.values()))


def test_exact_keys_at_every_level() -> None:
    view = view_of(busy_execution())
    assert set(view) == EXECUTION_KEYS
    assert view["version"] == JSON_VIEW_VERSION == "taskwire.v1"
    assert set(view["closing"]) == {"state", "reason"}
    assert set(view["closing"]["reason"]) == REASON_KEYS
    for task_run in view["task_runs"]:
        assert set(task_run) == TASK_RUN_KEYS
        assert set(task_run["retry_policy"]) == RETRY_POLICY_KEYS
        for attempt in task_run["attempts"]:
            assert set(attempt) == ATTEMPT_KEYS
            if attempt["error"] is not None:
                assert set(attempt["error"]) == ERROR_KEYS
    extract = view["task_runs"][0]
    assert set(extract["progress"]) == {"fraction", "message"}
    assert set(extract["cancel_requested"]) == REASON_KEYS
    assert set(view["task_runs"][1]["reason"]) == REASON_KEYS


def test_values_are_names_seconds_and_utc_timestamps() -> None:
    sim = busy_execution()
    view = view_of(sim)
    assert view["state"] == "RUNNING"
    assert view["closing"] == {
        "state": "CANCELLED",
        "reason": {"code": "CANCEL_REQUESTED", "message": "operator stop"},
    }
    assert view["idempotency_key"] == "nightly-2030-01-01"
    assert view["metadata"] == {"team": "data"}
    extract, load = view["task_runs"]
    assert extract["state"] == "RUNNING"
    assert extract["reason"] is None
    assert extract["cancel_requested"] == {"code": "EXECUTION_CANCELLED", "message": "operator stop"}
    assert extract["timeout_s"] == 30.0
    assert extract["progress"] == {"fraction": 0.25, "message": "a quarter"}
    assert extract["retry_policy"] == {
        "max_attempts": 3,
        "initial_interval_s": 1.0,
        "backoff_coefficient": 2.0,
        "maximum_interval_s": 100.0,
        "non_retryable_error_types": ["KeyError"],
        "max_infrastructure_retries": 3,
    }
    first, second = extract["attempts"]
    assert (first["number"], first["worker_id"], first["outcome"]) == (1, "w-1", "FAILED")
    assert first["error"] == {
        "type": "ConnectionError",
        "message": "reset",
        "retryable": True,
        "traceback": "Traceback...",
        "retry_after_s": None,
    }
    assert (second["outcome"], second["ended_at"], second["error"]) == ("RUNNING", None, None)
    assert load["state"] == "CANCELLED"
    assert load["reason"]["code"] == "EXECUTION_CANCELLED"
    assert load["depends_on"] == ["extract"]
    assert load["timeout_s"] is None
    assert load["started_at"] is None
    assert load["attempts"] == []
    assert view["created_at"] == "2030-01-01T12:00:00.000000Z"
    assert view["deadline"] == "2030-01-01T13:00:00.000000Z"


def test_every_timestamp_is_iso_utc_with_z() -> None:
    view = view_of(busy_execution())
    seen = 0

    def walk(value: Any, key: str = "") -> None:
        nonlocal seen
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif key in TIMESTAMP_KEYS and value is not None:
            assert TIMESTAMP.match(value), (key, value)
            seen += 1

    walk(view)
    assert seen >= 10


def test_iso_converts_to_utc() -> None:
    paris = timezone(timedelta(hours=2))
    assert iso(datetime(2030, 6, 1, 14, 30, 0, 5, tzinfo=paris)) == "2030-06-01T12:30:00.000005Z"
    assert iso(datetime(2030, 6, 1, 12, 30, tzinfo=UTC)) == "2030-06-01T12:30:00.000000Z"
    assert iso(None) is None


def test_json_payloads_are_inlined() -> None:
    view = view_of(busy_execution())
    assert view["task_runs"][0]["input"] == {"day": "2030-01-01", "limit": 10}
    assert payload_view(Payload(b"null")) is None
    assert payload_view(Payload(b'"text"', content_type="")) == "text"
    assert payload_view(None) is None


@pytest.mark.parametrize(
    "payload",
    [
        Payload(b"\x00\x01binary", content_type="application/octet-stream"),
        Payload(b"plain words", content_type="text/plain"),
        Payload(b"{not json", content_type="application/json"),
        Payload(b"[NaN]"),  # NaN is not JSON: it would make the whole view invalid JSON
        Payload(b"[" * 100_000 + b"]" * 100_000),  # too deep to parse
    ],
    ids=["binary", "text", "broken-json", "nan", "deep"],
)
def test_other_payloads_are_base64_with_their_content_type(payload: Payload) -> None:
    shown = payload_view(payload)
    assert shown == {"content_type": payload.content_type, "base64": base64.b64encode(payload.data).decode()}
    assert base64.b64decode(shown["base64"]) == payload.data


def test_the_view_round_trips_through_json() -> None:
    view = view_of(busy_execution())
    text = json.dumps(view, allow_nan=False)
    assert json.loads(text) == view


def test_nulls_are_present_not_missing() -> None:
    sim = Sim.start(ExecutionSpec(tasks=(TaskSpec("h"),)), now=T0)
    view = view_of(sim)
    assert view["idempotency_key"] is None
    for key in ("reason", "closing", "deadline", "not_before", "started_at", "ended_at"):
        assert key in view
        assert view[key] is None
    (task_run,) = view["task_runs"]
    for key in ("reason", "timeout_s", "progress", "not_before", "cancel_requested", "started_at", "ended_at"):
        assert key in task_run
        assert task_run[key] is None


def test_progress_nan_is_shown_as_zero() -> None:
    """Regression: a NaN fraction made the view invalid JSON and every replay of it an applied change."""
    sim = Sim.start(ExecutionSpec(tasks=(TaskSpec("h"),)))
    sim.dispatch("main")
    assert sim.task("main", TaskProgressed(attempt=1, fraction=float("nan"))).applied
    assert not sim.task("main", TaskProgressed(attempt=1, fraction=float("nan"))).applied
    shown = task_run_view(sim["main"])["progress"]
    assert shown == {"fraction": 0.0, "message": ""}
    json.dumps(shown, allow_nan=False)


def test_attempt_view_on_its_own() -> None:
    sim = busy_execution()
    attempt = sim["extract"].attempts[0]
    shown = attempt_view(attempt)
    assert shown["started_at"] == iso(attempt.started_at)
    assert shown["output"] is None
