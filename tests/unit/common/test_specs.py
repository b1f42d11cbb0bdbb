"""validate_execution_spec names every bad field by its exact path."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskwire.common import (
    DEFAULT_TASK_ID,
    MAX_ATTEMPTS_LIMIT,
    ExecutionSpec,
    Limits,
    Payload,
    RetryPolicy,
    TaskSpec,
    ValidationError,
    find_cycle,
    validate_execution_spec,
)
from tests.unit.domain.factories import PROPERTY_SETTINGS

LIMITS = Limits()
H = "tests.handler"


def one(**task: Any) -> ExecutionSpec:
    return ExecutionSpec(tasks=(TaskSpec(**{"handler": H, **task}),))


def many(*tasks: TaskSpec, **fields: Any) -> ExecutionSpec:
    return ExecutionSpec(tasks=tasks, **fields)


def refused(spec: ExecutionSpec, limits: Limits = LIMITS) -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        validate_execution_spec(spec, limits)
    error = raised.value
    assert error.status_name == "INVALID_ARGUMENT"
    assert str(error) == f"{error.field}: {error.problem}"
    return error


# ---- Each bad field, by path -----------------------------------------------------------------------------

BAD_SPECS: list[tuple[str, ExecutionSpec, str, str]] = [
    # (id, spec, field, a fragment of the problem)
    ("no tasks", ExecutionSpec(tasks=()), "execution.tasks", "at least one task"),
    ("long name", many(TaskSpec(H), name="n" * 257), "execution.name", "256"),
    ("long key", many(TaskSpec(H), idempotency_key="k" * 257), "execution.idempotency_key", "256"),
    ("metadata count", many(TaskSpec(H), metadata={str(i): "" for i in range(65)}), "execution.metadata", "64"),
    ("metadata empty key", many(TaskSpec(H), metadata={"": "v"}), "execution.metadata", "keys"),
    ("metadata long value", many(TaskSpec(H), metadata={"k": "v" * 1025}), "execution.metadata['k']", "1024"),
    ("zero timeout", many(TaskSpec(H), timeout=timedelta(0)), "execution.timeout", "positive"),
    ("negative timeout", many(TaskSpec(H), timeout=timedelta(seconds=-1)), "execution.timeout", "positive"),
    ("empty handler", one(handler=""), "execution.tasks[0].handler", "empty"),
    ("blank handler", one(handler="   "), "execution.tasks[0].handler", "empty"),
    ("padded handler", one(handler=" h "), "execution.tasks[0].handler", "spaces"),
    ("long handler", one(handler="h" * 257), "execution.tasks[0].handler", "256"),
    (
        "missing task id",
        many(TaskSpec(H, task_id="a"), TaskSpec(H)),
        "execution.tasks[1].task_id",
        "more than one task",
    ),
    ("bad task id", one(task_id="a b"), "execution.tasks[0].task_id", "[A-Za-z0-9_.-]"),
    ("task id with a newline", one(task_id="abc\n"), "execution.tasks[0].task_id", "[A-Za-z0-9_.-]"),
    ("long task id", one(task_id="t" * 129), "execution.tasks[0].task_id", "1-128"),
    (
        "duplicate task id",
        many(TaskSpec(H, task_id="a"), TaskSpec(H, task_id="b"), TaskSpec(H, task_id="a")),
        "execution.tasks[2].task_id",
        "duplicate task id 'a' (also tasks[0])",
    ),
    ("invalid JSON", one(input=Payload(b"{")), "execution.tasks[0].input", "not valid JSON"),
    ("empty JSON", one(input=Payload(b"")), "execution.tasks[0].input", "not valid JSON"),
    ("NaN is not JSON", one(input=Payload(b"[NaN]")), "execution.tasks[0].input", "not valid JSON"),
    ("Infinity is not JSON", one(input=Payload(b'{"x": -Infinity}')), "execution.tasks[0].input", "not valid JSON"),
    (
        "too deep to parse",
        one(input=Payload(b"[" * 100_000 + b"]" * 100_000)),
        "execution.tasks[0].input",
        "not valid JSON",
    ),
    ("not UTF-8", one(input=Payload(b'"\xff"')), "execution.tasks[0].input", "not valid JSON"),
    ("zero task timeout", one(timeout=timedelta(0)), "execution.tasks[0].timeout", "positive"),
    ("negative task timeout", one(timeout=timedelta(seconds=-5)), "execution.tasks[0].timeout", "-5s"),
    (
        "negative max_attempts",
        one(retry_policy=RetryPolicy(max_attempts=-1)),
        "execution.tasks[0].retry_policy.max_attempts",
        "between 1 and 100",
    ),
    (
        "too many attempts",
        one(retry_policy=RetryPolicy(max_attempts=MAX_ATTEMPTS_LIMIT + 1)),
        "execution.tasks[0].retry_policy.max_attempts",
        "got 101",
    ),
    (
        "zero initial interval",
        one(retry_policy=RetryPolicy(initial_interval=timedelta(0))),
        "execution.tasks[0].retry_policy.initial_interval",
        "positive",
    ),
    (
        "coefficient below one",
        one(retry_policy=RetryPolicy(backoff_coefficient=0.5)),
        "execution.tasks[0].retry_policy.backoff_coefficient",
        "at least 1",
    ),
    (
        "negative coefficient",
        one(retry_policy=RetryPolicy(backoff_coefficient=-2)),
        "execution.tasks[0].retry_policy.backoff_coefficient",
        "at least 1",
    ),
    (
        "NaN coefficient",
        one(retry_policy=RetryPolicy(backoff_coefficient=float("nan"))),
        "execution.tasks[0].retry_policy.backoff_coefficient",
        "finite",
    ),
    (
        "infinite coefficient",
        one(retry_policy=RetryPolicy(backoff_coefficient=float("inf"))),
        "execution.tasks[0].retry_policy.backoff_coefficient",
        "finite",
    ),
    (
        "zero maximum interval",
        one(retry_policy=RetryPolicy(maximum_interval=timedelta(0))),
        "execution.tasks[0].retry_policy.maximum_interval",
        "positive",
    ),
    (
        "maximum below initial",
        one(retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(seconds=1))),
        "execution.tasks[0].retry_policy.maximum_interval",
        "initial_interval",
    ),
    (
        "blank error type",
        one(retry_policy=RetryPolicy(non_retryable_error_types=("KeyError", " "))),
        "execution.tasks[0].retry_policy.non_retryable_error_types[1]",
        "empty",
    ),
    (
        "task timeout of ten thousand years",
        one(timeout=timedelta(days=3_652_500)),
        "execution.tasks[0].timeout",
        "at most 3660 days",
    ),
    (
        "execution timeout past the limit",
        ExecutionSpec(tasks=(TaskSpec(H),), timeout=timedelta(days=3661)),
        "execution.timeout",
        "at most 3660 days",
    ),
    (
        "retry interval past the limit",
        one(retry_policy=RetryPolicy(max_attempts=2, initial_interval=timedelta(days=4000))),
        "execution.tasks[0].retry_policy.initial_interval",
        "at most 3660 days",
    ),
    (
        "unknown dependency",
        many(TaskSpec(H, task_id="a"), TaskSpec(H, task_id="b", depends_on=("c",))),
        "execution.tasks[1].depends_on",
        "unknown task id 'c'",
    ),
    (
        "self dependency",
        many(TaskSpec(H, task_id="a"), TaskSpec(H, task_id="b", depends_on=("b",))),
        "execution.tasks[1].depends_on",
        "cannot depend on itself",
    ),
    (
        "dependency listed twice",
        many(TaskSpec(H, task_id="a"), TaskSpec(H, task_id="b", depends_on=("a", "a"))),
        "execution.tasks[1].depends_on",
        "more than once",
    ),
    (
        "two-task cycle",
        many(TaskSpec(H, task_id="a", depends_on=("b",)), TaskSpec(H, task_id="b", depends_on=("a",))),
        "execution.tasks",
        "dependency cycle a -> b -> a",
    ),
    (
        "cycle behind a root",
        many(
            TaskSpec(H, task_id="root"),
            TaskSpec(H, task_id="x", depends_on=("root", "z")),
            TaskSpec(H, task_id="y", depends_on=("x",)),
            TaskSpec(H, task_id="z", depends_on=("y",)),
        ),
        "execution.tasks",
        "dependency cycle x -> z -> y -> x",
    ),
]


@pytest.mark.parametrize(("spec", "field", "problem"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_a_bad_field_is_named_by_its_path(spec: ExecutionSpec, field: str, problem: str) -> None:
    error = refused(spec)
    assert error.field == field
    assert problem in error.problem


def test_too_many_tasks() -> None:
    spec = many(*(TaskSpec(H, task_id=f"t{i}") for i in range(3)))
    error = refused(spec, Limits(max_tasks=2))
    assert error.field == "execution.tasks"
    assert "at most 2 tasks, got 3" in error.problem


def test_payload_size_limit() -> None:
    limits = Limits(max_payload_bytes=10)
    validate_execution_spec(one(input=Payload(b'"12345678"')), limits)  # exactly 10 bytes
    error = refused(one(input=Payload(b'"123456789"')), limits)
    assert error.field == "execution.tasks[0].input"
    assert "11 bytes is over the limit of 10 bytes" in error.problem


def test_non_json_payloads_are_not_parsed() -> None:
    spec = one(input=Payload(b"\x00\xff raw bytes", content_type="application/octet-stream"))
    assert validate_execution_spec(spec, LIMITS).tasks[0].input == spec.tasks[0].input


def test_the_path_prefix_is_the_callers() -> None:
    with pytest.raises(ValidationError) as raised:
        validate_execution_spec(one(handler=""), LIMITS, where="executions[3]")
    assert raised.value.field == "executions[3].tasks[0].handler"


def test_fields_are_checked_in_order_and_the_first_bad_one_is_reported() -> None:
    spec = many(TaskSpec("", task_id="a"), TaskSpec(H, task_id="a"))
    assert refused(spec).field == "execution.tasks[0].handler"


# ---- Defaults --------------------------------------------------------------------------------------------


def test_defaults_are_filled_in() -> None:
    spec = ExecutionSpec(
        tasks=(TaskSpec("pkg.first", retry_policy=RetryPolicy(max_attempts=0, backoff_coefficient=0)),)
    )
    valid = validate_execution_spec(spec, LIMITS)
    assert valid.tasks[0].task_id == DEFAULT_TASK_ID == "main"
    assert valid.name == "pkg.first", "the name defaults to the first handler"
    assert valid.tasks[0].retry_policy.max_attempts == 1
    assert valid.tasks[0].retry_policy.backoff_coefficient == 2.0
    assert spec.tasks[0].task_id == "", "the spec given is left as it was"


def test_given_values_are_kept() -> None:
    spec = many(
        TaskSpec("pkg.first", task_id="a", retry_policy=RetryPolicy(max_attempts=MAX_ATTEMPTS_LIMIT)),
        TaskSpec("pkg.second", task_id="b", depends_on=("a",)),
        name="nightly",
    )
    valid = validate_execution_spec(spec, LIMITS)
    assert valid.name == "nightly"
    assert [t.task_id for t in valid.tasks] == ["a", "b"]
    assert valid.tasks[0].retry_policy.max_attempts == MAX_ATTEMPTS_LIMIT
    assert validate_execution_spec(valid, LIMITS) == valid, "validation is idempotent"


def test_several_tasks_get_no_default_id_but_the_first_named_handler_names_the_execution() -> None:
    valid = validate_execution_spec(many(TaskSpec("pkg.b", task_id="x"), TaskSpec("pkg.c", task_id="y")), LIMITS)
    assert valid.name == "pkg.b"


# ---- Cycles ----------------------------------------------------------------------------------------------


def test_a_long_chain_listed_backwards_validates() -> None:
    """Regression: the cycle search recursed once per task and hit Python's recursion limit at 1000 tasks."""
    tasks = tuple(
        TaskSpec(H, task_id=f"t{i}", depends_on=(f"t{i - 1}",) if i else ()) for i in reversed(range(LIMITS.max_tasks))
    )
    assert len(validate_execution_spec(ExecutionSpec(tasks=tasks), LIMITS).tasks) == LIMITS.max_tasks


def test_a_long_cycle_is_reported_whole() -> None:
    n = 1000
    graph = {f"t{i}": [f"t{(i + 1) % n}"] for i in range(n)}
    cycle = find_cycle(graph)
    assert cycle is not None
    assert cycle[0] == cycle[-1] == "t0"
    assert len(cycle) == n + 1


def _acyclic(graph: dict[str, list[str]]) -> bool:
    """Kahn's algorithm, as an independent oracle."""
    indegree = dict.fromkeys(graph, 0)
    for dependencies in graph.values():
        for dependency in dependencies:
            indegree[dependency] += 1
    ready = [node for node, degree in indegree.items() if degree == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for dependency in graph[node]:
            indegree[dependency] -= 1
            if indegree[dependency] == 0:
                ready.append(dependency)
    return seen == len(graph)


@settings(PROPERTY_SETTINGS, max_examples=100)
@given(
    st.integers(1, 8).flatmap(
        lambda n: st.fixed_dictionaries(
            {f"n{i}": st.lists(st.sampled_from([f"n{j}" for j in range(n)]), max_size=3, unique=True) for i in range(n)}
        )
    )
)
def test_find_cycle_finds_a_real_cycle_exactly_when_there_is_one(graph: dict[str, list[str]]) -> None:
    cycle = find_cycle(graph)
    assert (cycle is None) == _acyclic(graph)
    if cycle is not None:
        assert cycle[0] == cycle[-1]
        assert len(set(cycle[:-1])) == len(cycle) - 1, "a simple cycle"
        for node, dependency in itertools.pairwise(cycle):
            assert dependency in graph[node]
