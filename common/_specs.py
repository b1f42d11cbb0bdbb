"""What a client asks for (specs), and how a spec is validated.

Validation errors name the field by path (`execution.tasks[1].depends_on`) so a
person can find the mistake, whatever client they used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ._errors import ValidationError
from ._evolve import evolve
from ._models import (
    DEFAULT_PRIORITY,
    MAX_ATTEMPTS_LIMIT,
    MAX_CONCURRENCY_LIMIT,
    MAX_INFRASTRUCTURE_RETRIES_LIMIT,
    MAX_PRIORITY,
    MIN_PRIORITY,
    RetryPolicy,
)
from ._payload import Payload, loads_json
from ._refs import MARKER, InputReferenceError, references

DEFAULT_TASK_ID = "main"
_TASK_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits a server enforces on what it accepts."""

    max_payload_bytes: int = 2 * 1024 * 1024
    max_tasks: int = 1000
    max_name_chars: int = 256
    max_key_chars: int = 256
    max_metadata_entries: int = 64
    # Timeouts and retry intervals beyond this are refused: a far larger one is surely a unit mistake,
    # and it would overflow date arithmetic later.
    max_duration: timedelta = timedelta(days=3660)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    handler: str
    task_id: str = ""
    input: Payload = field(default_factory=Payload)
    depends_on: tuple[str, ...] = ()
    timeout: timedelta | None = None
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    # How long it may wait PENDING for a worker to start it (each time it becomes PENDING); None: no limit.
    schedule_to_start_timeout: timedelta | None = None
    # MIN_PRIORITY to MAX_PRIORITY: among a handler's queued task runs, a higher one is dispatched first.
    priority: int = DEFAULT_PRIORITY
    # With a key: at most `concurrency_limit` attempts of the key run at once, across all workers.
    concurrency_key: str = ""
    concurrency_limit: int = 0
    # Its tenant: within a priority, dispatch takes the fairness keys of a handler's queue in turns.
    fairness_key: str = ""
    # The name of a rate limit the server defines: each dispatch takes a token of it (of its key's bucket).
    rate_limit: str = ""
    rate_limit_key: str = ""


@dataclass(frozen=True, slots=True)
class ExecutionSpec:
    tasks: tuple[TaskSpec, ...]
    name: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    timeout: timedelta | None = None
    not_before: datetime | None = None
    idempotency_key: str = ""
    # The submitter's W3C trace context (traceparent, tracestate); empty: none.
    trace_context: Mapping[str, str] = field(default_factory=dict)


def _duration(value: timedelta | None, where: str, limits: Limits) -> None:
    """A duration must be positive and at most the limit; None (unset) passes."""
    if value is None:
        return
    if value <= timedelta(0):
        raise ValidationError(where, f"must be positive, got {value.total_seconds():g}s")
    if value > limits.max_duration:
        raise ValidationError(where, f"must be at most {limits.max_duration.days} days, got {value.days} days")


def _validate_retry_policy(policy: RetryPolicy, where: str, limits: Limits) -> RetryPolicy:
    if not 0 <= policy.max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise ValidationError(
            f"{where}.max_attempts", f"must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {policy.max_attempts}"
        )
    if not 0 <= policy.max_infrastructure_retries <= MAX_INFRASTRUCTURE_RETRIES_LIMIT:
        raise ValidationError(
            f"{where}.max_infrastructure_retries",
            f"must be between 0 and {MAX_INFRASTRUCTURE_RETRIES_LIMIT}, got {policy.max_infrastructure_retries}",
        )
    _duration(policy.initial_interval, f"{where}.initial_interval", limits)
    coefficient = policy.backoff_coefficient
    if not math.isfinite(coefficient) or (coefficient != 0 and coefficient < 1):
        raise ValidationError(f"{where}.backoff_coefficient", f"must be a finite number at least 1, got {coefficient}")
    _duration(policy.maximum_interval, f"{where}.maximum_interval", limits)
    if policy.maximum_interval is not None and policy.maximum_interval < policy.initial_interval:
        raise ValidationError(f"{where}.maximum_interval", "must not be shorter than initial_interval")
    for i, name in enumerate(policy.non_retryable_error_types):
        if not name.strip():
            raise ValidationError(f"{where}.non_retryable_error_types[{i}]", "must not be empty")
    if policy.max_attempts and policy.backoff_coefficient:
        return policy  # no default to fill in
    return evolve(
        policy,
        max_attempts=policy.max_attempts or 1,
        backoff_coefficient=policy.backoff_coefficient or 2.0,
    )


def _validate_references(task: TaskSpec, where: str) -> None:
    """Every `{"$from": ...}` in the input names one of the task's dependencies (see `_refs`)."""
    payload = task.input
    if not payload.is_json or MARKER not in payload.data:
        return
    try:
        for path, task_id in references(loads_json(payload.data)):
            if task_id not in task.depends_on:
                raise ValidationError(
                    f"{where}{path}", f"refers to the output of task {task_id!r}, which is not in depends_on"
                )
    except InputReferenceError as error:
        raise ValidationError(where, str(error)) from None


def _validate_keys(task: TaskSpec, at: str, limits: Limits) -> None:
    for name in ("fairness_key", "rate_limit", "rate_limit_key"):
        value = getattr(task, name)
        if len(value) > limits.max_key_chars or value != value.strip():
            raise ValidationError(
                f"{at}.{name}", f"must be at most {limits.max_key_chars} characters with no surrounding spaces"
            )
    if task.rate_limit_key and not task.rate_limit:
        raise ValidationError(f"{at}.rate_limit_key", "needs a rate_limit")
    key, limit = task.concurrency_key, task.concurrency_limit
    if not key:
        if limit:
            raise ValidationError(f"{at}.concurrency_limit", "needs a concurrency_key")
        return
    if len(key) > limits.max_key_chars or key != key.strip():
        raise ValidationError(
            f"{at}.concurrency_key", f"must be at most {limits.max_key_chars} characters with no surrounding spaces"
        )
    if not 1 <= limit <= MAX_CONCURRENCY_LIMIT:
        raise ValidationError(
            f"{at}.concurrency_limit", f"must be between 1 and {MAX_CONCURRENCY_LIMIT} with a key, got {limit}"
        )


def _validate_payload(payload: Payload, where: str, limits: Limits) -> None:
    if len(payload.data) > limits.max_payload_bytes:
        raise ValidationError(
            where,
            f"payload of {len(payload.data)} bytes is over the limit of {limits.max_payload_bytes} bytes",
        )
    if payload.is_json:
        try:
            loads_json(payload.data)
        except ValueError as error:
            raise ValidationError(where, f"is not valid JSON ({error})") from None


def find_cycle(depends_on: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as a path that starts and ends on the same task, or None.

    A depth-first search with an explicit stack: a chain of a thousand tasks must
    not exhaust Python's recursion limit.
    """
    done: set[str] = set()
    for root in depends_on:
        if root in done:
            continue
        path, on_path = [root], {root}
        pending = [iter(depends_on.get(root, ()))]
        while pending:
            dependency = next(pending[-1], None)
            if dependency is None:
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                pending.pop()
            elif dependency in on_path:
                return [*path[path.index(dependency) :], dependency]
            elif dependency not in done:
                path.append(dependency)
                on_path.add(dependency)
                pending.append(iter(depends_on.get(dependency, ())))
    return None


#: The metadata label that links a re-run to the execution it re-runs.
RERUN_OF = "taskwire.rerun_of"


def validate_execution_spec(spec: ExecutionSpec, limits: Limits, where: str = "execution") -> ExecutionSpec:
    """Check every field; return the spec with defaults filled in, or raise ValidationError."""
    if not spec.tasks:
        raise ValidationError(f"{where}.tasks", "at least one task is required")
    if len(spec.tasks) > limits.max_tasks:
        raise ValidationError(f"{where}.tasks", f"at most {limits.max_tasks} tasks, got {len(spec.tasks)}")
    if len(spec.name) > limits.max_name_chars:
        raise ValidationError(f"{where}.name", f"at most {limits.max_name_chars} characters")
    if len(spec.idempotency_key) > limits.max_key_chars:
        raise ValidationError(f"{where}.idempotency_key", f"at most {limits.max_key_chars} characters")
    # The label a re-run adds is not counted: an execution with as many labels as allowed can be run again.
    if len(spec.metadata) - (RERUN_OF in spec.metadata) > limits.max_metadata_entries:
        raise ValidationError(f"{where}.metadata", f"at most {limits.max_metadata_entries} entries")
    for key, value in spec.metadata.items():
        if not key or len(key) > 128:
            raise ValidationError(f"{where}.metadata", f"keys must have 1 to 128 characters, got {key!r}")
        if len(value) > 1024:
            raise ValidationError(f"{where}.metadata[{key!r}]", "values must have at most 1024 characters")
    _duration(spec.timeout, f"{where}.timeout", limits)
    if len(spec.trace_context) > 8:
        raise ValidationError(f"{where}.trace_context", f"at most 8 entries, got {len(spec.trace_context)}")
    for key, value in spec.trace_context.items():
        if not 0 < len(key) <= 64 or len(value) > 1024:
            raise ValidationError(
                f"{where}.trace_context", f"keys must have 1 to 64 characters and values at most 1024, got {key!r}"
            )

    tasks: list[TaskSpec] = []
    seen: dict[str, int] = {}
    for i, task in enumerate(spec.tasks):
        at = f"{where}.tasks[{i}]"
        task_id = task.task_id or (DEFAULT_TASK_ID if len(spec.tasks) == 1 else "")
        if not task_id:
            raise ValidationError(f"{at}.task_id", "required when an execution has more than one task")
        if not _TASK_ID.fullmatch(task_id):
            raise ValidationError(f"{at}.task_id", f"{task_id!r} must be 1-128 characters of [A-Za-z0-9_.-]")
        if task_id in seen:
            raise ValidationError(f"{at}.task_id", f"duplicate task id {task_id!r} (also tasks[{seen[task_id]}])")
        seen[task_id] = i
        handler = task.handler.strip()
        if not handler:
            raise ValidationError(f"{at}.handler", "must not be empty")
        if len(handler) > 256 or handler != task.handler:
            raise ValidationError(f"{at}.handler", "must be at most 256 characters with no surrounding spaces")
        _validate_payload(task.input, f"{at}.input", limits)
        _validate_references(task, f"{at}.input")
        _duration(task.timeout, f"{at}.timeout", limits)
        _duration(task.schedule_to_start_timeout, f"{at}.schedule_to_start_timeout", limits)
        if not MIN_PRIORITY <= task.priority <= MAX_PRIORITY:
            raise ValidationError(
                f"{at}.priority", f"must be between {MIN_PRIORITY} and {MAX_PRIORITY}, got {task.priority}"
            )
        _validate_keys(task, at, limits)
        policy = _validate_retry_policy(task.retry_policy, f"{at}.retry_policy", limits)
        if task_id != task.task_id or policy is not task.retry_policy:
            task = evolve(task, task_id=task_id, retry_policy=policy)
        tasks.append(task)

    for i, task in enumerate(tasks):
        at = f"{where}.tasks[{i}].depends_on"
        if len(set(task.depends_on)) != len(task.depends_on):
            raise ValidationError(at, "lists a task more than once")
        for dependency in task.depends_on:
            if dependency == task.task_id:
                raise ValidationError(at, f"task {task.task_id!r} cannot depend on itself")
            if dependency not in seen:
                raise ValidationError(at, f"unknown task id {dependency!r}")
    cycle = find_cycle({task.task_id: task.depends_on for task in tasks})
    if cycle:
        raise ValidationError(f"{where}.tasks", "dependency cycle " + " -> ".join(cycle))
    return evolve(spec, tasks=tuple(tasks), name=spec.name or tasks[0].handler)
