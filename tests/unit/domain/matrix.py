"""What both matrix tests share: expected outcomes and the checks on a refusal."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from taskwire.server.domain import Effect, Execution, InvalidTransition, State, TaskRun, TerminalStateError, Transition


@dataclass(frozen=True)
class Outcome:
    """What one allowed (record, event) pair must produce."""

    state: State
    applied: bool = True
    effects: tuple[type[Effect], ...] = ()


class Guarded:
    """A listed pair whose precondition the record does not meet, so it is refused all the same.

    For example RetryDue on a task run WAITING for its dependencies, or ExecutionSettled on an
    execution that is not closing.
    """


GUARDED = Guarded()


def check_refusal(error: InvalidTransition, *, entity: str, record: TaskRun | Execution, event: str) -> None:
    """The error names what the CLI needs, and its message reads as one plain sentence."""
    expected_type = TerminalStateError if record.state.is_terminal else InvalidTransition
    assert type(error) is expected_type
    assert error.status_name == "FAILED_PRECONDITION"
    assert error.entity == entity
    assert error.entity_id == record.id
    assert error.state == record.state.value
    assert error.event == event
    assert error.reason
    message = str(error)
    assert message == error.message
    assert message == f"{entity} {record.id} is {record.state.value}: cannot apply {event} ({error.reason})"
    assert "\n" not in message
    # No Python reprs leak into what a person reads.
    assert "State." not in message
    assert "<" not in message
    assert "(attempt=" not in message


def check_expectations_match(
    expected: Mapping[tuple[str, type], Outcome | Guarded],
    variants: Mapping[str, Callable[[], TaskRun | Execution]],
    table: Mapping[tuple[State, type], Any],
) -> None:
    """EXPECTED lists exactly the table's pairs, and each expected outcome is one of its row's targets."""
    expected_pairs = {(variants[label]().state, event_type) for label, event_type in expected}
    assert expected_pairs == set(table)
    for (label, event_type), outcome in expected.items():
        if isinstance(outcome, Outcome):
            row = table[(variants[label]().state, event_type)]
            assert outcome.state in row.targets, (label, event_type)


def check_outcome(result: Transition[Any], targets: frozenset[State], expected: Outcome) -> None:
    """An allowed pair reached one of its row's targets: the expected state, applied or not, with its effects."""
    assert result.record.state in targets
    assert result.record.state is expected.state
    assert result.applied is expected.applied
    assert tuple(type(effect) for effect in result.effects) == expected.effects
