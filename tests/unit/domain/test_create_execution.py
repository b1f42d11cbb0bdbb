"""create_execution builds the records of a validated spec."""

from __future__ import annotations

from datetime import timedelta

from taskwire.common import ReasonCode, State, TaskSpec, validate_execution_spec
from taskwire.server.domain import create_execution
from tests.unit.common.test_specs import LIMITS, H, many
from tests.unit.domain.factories import T0, at

# ---- Records from a spec ---------------------------------------------------------------------------------


def test_create_execution_builds_pending_and_waiting_records() -> None:
    spec = validate_execution_spec(
        many(
            TaskSpec(H, task_id="a"),
            TaskSpec(H, task_id="b", depends_on=("a",)),
            metadata={"team": "data"},
            timeout=timedelta(minutes=10),
            idempotency_key="key-1",
        ),
        LIMITS,
    )
    execution, (a, b) = create_execution(spec, execution_id="ex-9", task_run_ids=["tr-a", "tr-b"], now=T0)
    assert execution.state is State.PENDING
    assert execution.reason is None
    assert execution.deadline == T0 + timedelta(minutes=10)
    assert execution.metadata == {"team": "data"}
    assert execution.idempotency_key == "key-1"
    assert execution.created_at == execution.updated_at == T0
    assert (a.state, a.reason, a.id, a.execution_id) == (State.PENDING, None, "tr-a", "ex-9")
    assert b.state is State.WAITING
    assert b.reason is not None
    assert b.reason.code is ReasonCode.DEPENDENCIES
    assert "'a'" in b.reason.message


def test_create_execution_copies_metadata() -> None:
    metadata = {"k": "v"}
    spec = validate_execution_spec(many(TaskSpec(H), metadata=metadata), LIMITS)
    execution, _ = create_execution(spec, execution_id="ex-1", task_run_ids=["tr-1"], now=T0)
    metadata["k"] = "changed"
    assert execution.metadata == {"k": "v"}


def test_create_execution_schedules_for_later() -> None:
    spec = validate_execution_spec(
        many(TaskSpec(H, task_id="a"), TaskSpec(H, task_id="b", depends_on=("a",)), not_before=at(60)), LIMITS
    )
    execution, (a, b) = create_execution(spec, execution_id="ex-1", task_run_ids=["tr-a", "tr-b"], now=T0)
    assert execution.state is State.WAITING
    assert execution.reason is not None
    assert execution.reason.code is ReasonCode.SCHEDULED
    assert execution.not_before == at(60)
    assert (a.state, a.not_before) == (State.WAITING, at(60))
    assert a.reason == execution.reason
    assert b.reason is not None
    assert b.reason.code is ReasonCode.DEPENDENCIES
