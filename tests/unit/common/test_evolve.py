"""`evolve` makes what `dataclasses.replace` makes, checked the same way, for every record the engine changes."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from taskwire.common import AttemptOutcome, ExecutionSpec, Reason, ReasonCode, RetryPolicy, State, TaskSpec, evolve
from tests.unit.domain.factories import CANCEL_REASON, ERROR, at, make_attempt, make_execution, make_task_run

RECORDS_AND_CHANGES: list[tuple[Any, dict[str, Any]]] = [
    (make_task_run(State.PENDING), {}),
    (make_task_run(State.PENDING), {"priority": 7, "updated_at": at(3), "fairness_key": "tenant-1"}),
    (make_task_run(State.RUNNING), {"pending_cancel": CANCEL_REASON, "updated_at": at(3)}),
    (
        make_task_run(State.RUNNING),
        {
            "state": State.FAILED,
            "reason": Reason(ReasonCode.HANDLER_ERROR, "boom"),
            "ended_at": at(3),
            "updated_at": at(3),
            "attempts": (make_attempt(1, AttemptOutcome.FAILED, started=1),),
        },
    ),
    (make_execution(State.PENDING), {"metadata": {"team": "a"}, "updated_at": at(1)}),
    (
        make_execution(State.RUNNING),
        {
            "state": State.SUCCESS,
            "reason": Reason(ReasonCode.COMPLETED, "done"),
            "ended_at": at(5),
            "updated_at": at(5),
        },
    ),
    (
        make_attempt(1, AttemptOutcome.RUNNING, started=1),
        {"outcome": AttemptOutcome.FAILED, "ended_at": at(2), "error": ERROR},
    ),
    (ExecutionSpec(tasks=(TaskSpec("h"),)), {"name": "named", "idempotency_key": "k"}),
    (TaskSpec("h"), {"task_id": "main", "retry_policy": RetryPolicy(max_attempts=3)}),
    (RetryPolicy(), {"initial_interval": timedelta(seconds=2)}),
]


@pytest.mark.parametrize(("record", "changes"), RECORDS_AND_CHANGES)
def test_evolve_makes_what_replace_makes(record: Any, changes: dict[str, Any]) -> None:
    made = evolve(record, **changes)
    assert made == dataclasses.replace(record, **changes)
    assert type(made) is type(record)
    for name, value in changes.items():
        assert getattr(made, name) is value
    for field in dataclasses.fields(record):
        if field.name not in changes:
            assert getattr(made, field.name) is getattr(record, field.name)
    assert made is not record
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.__setattr__(dataclasses.fields(record)[0].name, None)


def test_evolve_leaves_the_record_it_copies_as_it_was() -> None:
    record = make_task_run(State.PENDING)
    before = dataclasses.astuple(record)
    evolve(record, priority=9, updated_at=at(4))
    assert dataclasses.astuple(record) == before


def test_an_unknown_field_is_refused_as_replace_refuses_it() -> None:
    record = make_task_run(State.PENDING)
    with pytest.raises(TypeError, match="colour"):
        evolve(record, colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        dataclasses.replace(record, colour="red")  # type: ignore[call-arg]


def test_a_change_that_breaks_an_invariant_raises() -> None:
    with pytest.raises(ValueError, match="WAITING needs a reason"):
        evolve(make_task_run(State.PENDING), state=State.WAITING)
    with pytest.raises(ValueError, match="cannot end before"):
        evolve(make_attempt(1, AttemptOutcome.FAILED, started=2), ended_at=at(1))


@dataclasses.dataclass(frozen=True)
class _WithoutSlots:
    name: str
    size: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class _WithDerived:
    size: int
    double: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "double", 2 * self.size)


@dataclasses.dataclass(frozen=True, slots=True)
class _NamedLikeItsLocals:
    _record: str
    cls: int = 0


@dataclasses.dataclass(slots=True)
class _Mutable:
    size: int


@pytest.mark.parametrize(
    ("record", "changes"),
    [
        (_WithoutSlots("a"), {"size": 2}),
        (_WithDerived(2), {"size": 5}),
        (_NamedLikeItsLocals("a"), {"cls": 3, "_record": "b"}),
        (_Mutable(1), {"size": 2}),
    ],
)
def test_other_dataclasses_are_left_to_replace(record: Any, changes: dict[str, Any]) -> None:
    made = evolve(record, **changes)
    assert made == dataclasses.replace(record, **changes)
    assert made is not record


def test_a_field_computed_after_init_is_computed_again() -> None:
    assert evolve(_WithDerived(2), size=5).double == 10


def test_what_is_not_a_dataclass_is_refused() -> None:
    with pytest.raises(TypeError):
        evolve(object())  # type: ignore[type-var]
