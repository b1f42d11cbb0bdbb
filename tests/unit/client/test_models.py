"""ExecutionSnapshot, outputs, and the typed outcome of a terminal execution."""

from __future__ import annotations

import dataclasses

import pytest

from taskwire import common as d
from taskwire.client import ExecutionCancelled, ExecutionEnded, ExecutionFailed, ExecutionSnapshot
from taskwire.client._common import result_of, snapshot
from tests.unit.client.records import execution, execution_proto, task_run
from tests.unit.client.records import snapshot as make_snapshot


def test_snapshot_properties_of_a_single_task_execution() -> None:
    done = make_snapshot(d.State.SUCCESS)
    assert (done.id, done.name, done.state) == ("ex-1", "echo", d.State.SUCCESS)
    assert done.reason == d.Reason(d.ReasonCode.COMPLETED, "every task succeeded")
    assert done.is_terminal
    assert done.output == {"ok": True}
    assert done.outputs == {"main": {"ok": True}}
    assert done.task_run("main").handler == "echo"
    with pytest.raises(KeyError):
        done.task_run("other")


def test_output_of_a_multi_task_execution_is_by_task_id() -> None:
    runs = (task_run("a", output=1), task_run("b", output=[2]), task_run("c", state=d.State.RUNNING))
    value = ExecutionSnapshot(execution=execution(d.State.RUNNING), task_runs=runs)
    assert value.output == {"a": 1, "b": [2]}
    assert not value.is_terminal


def test_a_running_task_has_no_output() -> None:
    value = make_snapshot(d.State.RUNNING, task_run(state=d.State.RUNNING))
    assert value.output is None


def test_to_json_is_the_stable_execution_view() -> None:
    value = make_snapshot(d.State.SUCCESS)
    assert value.to_json() == d.execution_view(value.execution, value.task_runs)
    assert value.to_json()["version"] == d.JSON_VIEW_VERSION


def test_snapshot_from_proto_round_trips_through_wire() -> None:
    original = make_snapshot(d.State.FAILED)
    converted = snapshot(execution_proto(original), deduplicated=True)
    assert converted.execution == original.execution
    assert converted.task_runs == original.task_runs
    assert converted.deduplicated


def test_result_of_success_is_the_output() -> None:
    assert result_of(make_snapshot(d.State.SUCCESS)) == {"ok": True}


def test_result_of_failure_raises_with_the_reason_code() -> None:
    with pytest.raises(ExecutionFailed) as raised:
        result_of(make_snapshot(d.State.FAILED))
    error = raised.value
    assert isinstance(error, d.TaskwireError)
    assert error.execution_id == "ex-1"
    assert error.reason_code is d.ReasonCode.HANDLER_ERROR
    assert error.reason_message == "task 'main' failed: ValueError: boom"
    assert error.snapshot.state is d.State.FAILED
    assert str(error) == "execution ex-1 FAILED (HANDLER_ERROR: task 'main' failed: ValueError: boom)"


def test_result_of_cancellation_raises_cancelled() -> None:
    with pytest.raises(ExecutionCancelled) as raised:
        result_of(make_snapshot(d.State.CANCELLED, task_run(state=d.State.CANCELLED)))
    assert raised.value.reason_code is d.ReasonCode.CANCEL_REQUESTED
    assert not isinstance(raised.value, ExecutionFailed)


def test_result_of_a_terminal_state_from_a_newer_server_raises_execution_ended() -> None:
    done = make_snapshot(d.State.FAILED)
    expired = dataclasses.replace(done.execution, state=d.State.unrecognized("EXPIRED"))
    with pytest.raises(ExecutionEnded) as raised:
        result_of(dataclasses.replace(done, execution=expired))
    assert not isinstance(raised.value, ExecutionFailed | ExecutionCancelled)
    assert raised.value.state.value == "EXPIRED"
    assert str(raised.value) == "execution ex-1 EXPIRED (HANDLER_ERROR: task 'main' failed: ValueError: boom)"
