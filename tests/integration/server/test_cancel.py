"""Unknown ids are NOT_FOUND; cancelling is idempotent and leaves terminal executions as they are."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial

import grpc

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from tests.harness import BOTH_STORES, Cluster, ServerProcess
from tests.integration.server.support import Client, diamond, fails, serialized, spec, task

pytestmark = BOTH_STORES

Connect = Callable[[ServerProcess], Client]
UNKNOWN = uuid.uuid4().hex

UNKNOWN_ID_CALLS: dict[str, Callable[[Client], object]] = {
    "get": lambda client: client.get(UNKNOWN),
    "cancel": lambda client: client.cancel(UNKNOWN),
    "watch": lambda client: client.history(UNKNOWN),
    "watch-after-sequence": lambda client: client.history(UNKNOWN, after_sequence=3),
}


def test_an_unknown_id_is_not_found(client: Client) -> None:
    client.submit(spec())  # the store is not empty: an unknown id is still unknown
    for name, call in UNKNOWN_ID_CALLS.items():
        status = fails(partial(call, client))
        assert status.code is grpc.StatusCode.NOT_FOUND, f"{name}: {status}"
        assert UNKNOWN in status.details, f"{name}: the message should name the id: {status.details!r}"


def test_cancelling_twice_returns_the_same_cancelled_execution(client: Client) -> None:
    execution_id = client.submit(diamond()).execution.id

    first = client.cancel(execution_id, reason="changed my mind")
    assert not first.already_terminal
    cancelled = first.execution
    assert cancelled.state == pb.EXECUTION_STATE_CANCELLED, cancelled
    assert cancelled.reason_code == pb.REASON_CODE_CANCEL_REQUESTED
    assert cancelled.reason_message == "changed my mind"
    assert cancelled.HasField("ended_at")
    assert {run.state for run in cancelled.task_runs} == {pb.TASK_RUN_STATE_CANCELLED}
    history = client.history(execution_id)
    assert history[-1].execution_transition.to_state == pb.EXECUTION_STATE_CANCELLED

    second = client.cancel(execution_id, reason="another reason")
    assert second.already_terminal
    assert second.execution == cancelled, "a second cancel must change nothing"
    assert client.get(execution_id) == cancelled
    assert serialized(client.history(execution_id)) == serialized(history), "a second cancel added events"
    stats = client.stats()
    assert (stats.queue.size, stats.queue.empty) == (0, True), stats


def test_cancelling_a_finished_execution_is_an_ok_no_op(procs: Cluster, connect: Connect) -> None:
    server = procs.server()
    client = connect(server)
    procs.worker(server, slots=2)
    finished = {
        "success": client.submit(spec(task("echo", input={"ok": True}))).execution.id,
        "failed": client.submit(spec(task("fail", input={"message": "boom", "retryable": False}))).execution.id,
    }
    expected = {"success": pb.EXECUTION_STATE_SUCCESS, "failed": pb.EXECUTION_STATE_FAILED}
    for outcome, execution_id in finished.items():
        before = client.wait_until_terminal(execution_id)
        assert before.state == expected[outcome], before
        history = client.history(execution_id)

        response = client.cancel(execution_id, reason="too late")
        assert response.already_terminal
        assert response.execution == before, "cancelling a terminal execution changed it"
        assert client.get(execution_id) == before
        assert serialized(client.history(execution_id)) == serialized(history)


def test_cancel_reason_over_the_limit_is_refused(client: Client) -> None:
    execution_id = client.submit(spec()).execution.id
    status = fails(
        lambda: client.tasks.CancelExecution(
            tpb.CancelExecutionRequest(execution_id=execution_id, reason="x" * 1025), timeout=10
        )
    )
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT, status
    assert status.details.startswith("reason: "), status.details
    assert client.get(execution_id).state == pb.EXECUTION_STATE_PENDING
