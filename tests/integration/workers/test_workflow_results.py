"""Results flow along dependencies: a handler sees its upstream tasks' outputs, and an input may refer
to them with {"$from": TASK_ID, "path": ...}, checked at submit and replaced on the worker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskwire.client import (
    AttemptOutcome,
    Client,
    ExecutionSpec,
    InvalidTransition,
    Payload,
    RetryPolicy,
    State,
    TaskSpec,
    ValidationError,
)
from tests.harness import Cluster, ServerProcess
from tests.integration.workers.support import FINISH, json_output

HANDLERS = "tests.integration.workers.flow_handlers"


def task(task_id: str, handler: str, input: str = "null", *depends_on: str, attempts: int = 1) -> TaskSpec:
    return TaskSpec(
        handler,
        task_id=task_id,
        input=Payload(input.encode()),
        depends_on=depends_on,
        retry_policy=RetryPolicy(max_attempts=attempts),
    )


def test_a_three_task_chain_passes_each_output_on(procs: Cluster, server: ServerProcess, client: Client) -> None:
    procs.worker(server, handlers=HANDLERS, slots=2)
    spec = ExecutionSpec(
        tasks=(
            task("fetch", "flow.fetch", '"https://example.test/a"'),
            task("double", "flow.double", '{"numbers": {"$from": "fetch", "path": "items"}}', "fetch"),
            task("total", "flow.total", "null", "double"),
        )
    )
    done = client.wait_finished(client.submit_execution(spec).id, FINISH)
    assert done.state is State.SUCCESS, done
    by_id = {run.task_id: run for run in done.task_runs}
    assert json_output(by_id["fetch"].attempts[0]) == {"items": [1, 2, 3], "source": "https://example.test/a"}
    assert json_output(by_id["double"].attempts[0]) == [2, 4, 6]
    assert json_output(by_id["total"].attempts[0]) == {"total": 12, "saw_fetch": False}
    # What was stored is the input as submitted, reference included.
    assert by_id["double"].input.data == b'{"numbers": {"$from": "fetch", "path": "items"}}'


def test_a_reference_to_a_task_that_is_not_a_dependency_is_refused_at_submit(client: Client) -> None:
    spec = ExecutionSpec(
        tasks=(
            task("fetch", "flow.fetch"),
            task("double", "flow.double", '{"numbers": [{"$from": "fetch"}]}'),  # no depends_on
        )
    )
    with pytest.raises(ValidationError, match=r"execution\.tasks\[1\]\.input\.numbers\[0\]") as refused:
        client.submit_execution(spec)
    assert "not in depends_on" in str(refused.value)
    assert list(client.list()) == []  # nothing stored


def test_a_reference_to_a_missing_part_fails_without_retrying(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    procs.worker(server, handlers=HANDLERS, slots=2)
    spec = ExecutionSpec(
        tasks=(
            task("fetch", "flow.fetch"),
            task("echo", "flow.echo", '{"$from": "fetch", "path": "items.7"}', "fetch", attempts=3),
        )
    )
    done = client.wait_finished(client.submit_execution(spec).id, FINISH)
    assert done.state is State.FAILED, done
    echo = next(run for run in done.task_runs if run.task_id == "echo")
    (attempt,) = echo.attempts  # not retried: the upstream output will not change
    assert attempt.outcome is AttemptOutcome.FAILED
    assert attempt.error is not None
    assert attempt.error.type == "InputReferenceError"
    assert "'items.7'" in attempt.error.message


def test_a_rerun_of_only_the_failed_task_of_a_diamond_reuses_the_other_outputs(
    procs: Cluster, server: ServerProcess, client: Client, tmp_path: Path
) -> None:
    procs.worker(server, handlers=HANDLERS, slots=4)
    log, needs = tmp_path / "runs.log", tmp_path / "ready"

    def step(task_id: str, *depends_on: str, **extra: str) -> TaskSpec:
        params = json.dumps({"log": str(log), **extra})
        return task(task_id, "flow.step", params, *depends_on)

    spec = ExecutionSpec(
        tasks=(step("a"), step("b", "a"), step("c", "a", needs=str(needs)), step("d", "b", "c")),
        name="diamond",
        metadata={"team": "data"},
    )
    first = client.wait_finished(client.submit_execution(spec).id, FINISH)
    assert first.state is State.FAILED
    assert {run.task_id: run.state for run in first.task_runs} == {
        "a": State.SUCCESS,
        "b": State.SUCCESS,
        "c": State.FAILED,
        "d": State.CANCELLED,
    }
    assert sorted(log.read_text().split()) == ["a", "b", "c"]

    needs.touch()  # what c lacked is there now
    again = client.rerun(first.id, only_failed=True)
    assert again.id != first.id
    assert again.execution.metadata == {"team": "data", "taskwire.rerun_of": first.id}
    done = client.wait_finished(again.id, FINISH)
    assert done.state is State.SUCCESS, done
    by_id = {run.task_id: run for run in done.task_runs}
    for reused in ("a", "b"):  # not run again: their outputs are the original's
        (attempt,) = by_id[reused].attempts
        assert attempt.worker_id == f"(reused from {first.id})"
        original = next(run for run in first.task_runs if run.task_id == reused)
        assert json_output(attempt) == json_output(original.attempts[0])
    assert sorted(log.read_text().split()) == ["a", "b", "c", "c", "d"]  # only c and d ran again
    from_a = {"a": {"task": "a", "upstream": {}}}
    upstream_d = {"b": {"task": "b", "upstream": from_a}, "c": {"task": "c", "upstream": from_a}}
    expected_d = {"task": "d", "upstream": upstream_d}
    assert json_output(by_id["d"].attempts[0]) == expected_d

    # The original is untouched, and a re-run of the whole thing runs every task.
    assert client.get(first.id).state is State.FAILED
    whole = client.wait_finished(client.rerun(first.id).id, FINISH)
    assert whole.state is State.SUCCESS
    assert sorted(log.read_text().split()) == ["a", "a", "b", "b", "c", "c", "c", "d", "d"]
    with pytest.raises(InvalidTransition, match="every task of it succeeded"):
        client.rerun(whole.id, only_failed=True)
