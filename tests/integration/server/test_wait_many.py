"""WaitExecutions: a set of executions, each sent once as it finishes (those finished already in the first
message), with a real server and real workers; the statuses of bad input and of the deadline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from tests.harness import Cluster, ServerProcess
from tests.integration.server.support import Client, fails, sleeper, spec, task

UNSERVED = "wait.unserved"  # no worker serves it: its executions stay PENDING until cancelled


def wait(client: Client, execution_ids: list[str], timeout_s: float = 60.0) -> Iterator[tpb.WaitExecutionsResponse]:
    call: Iterator[tpb.WaitExecutionsResponse] = client.tasks.WaitExecutions(
        tpb.WaitExecutionsRequest(execution_ids=execution_ids), timeout=timeout_s
    )
    return call


def ids(response: tpb.WaitExecutionsResponse) -> list[str]:
    return [execution.id for execution in response.executions]


def submitted(client: Client, execution: tpb.ExecutionSpec) -> str:
    execution_id: str = client.submit(execution).execution.id
    return execution_id


def test_each_execution_comes_once_as_it_finishes_and_those_finished_already_at_once(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    procs.worker(server, slots=2)
    done = submitted(client, spec(task("echo", input={"n": 1})))
    client.wait_until_terminal(done)
    running = submitted(client, sleeper(60))
    client.wait_for_stats(lambda stats: stats.in_flight == 1, what="the sleeper running")
    queued = submitted(client, spec(task(UNSERVED)))

    stream = wait(client, [running, queued, done])
    first = next(stream)
    assert ids(first) == [done]
    assert first.remaining == 2
    assert first.executions[0].state == pb.EXECUTION_STATE_SUCCESS
    assert json.loads(first.executions[0].task_runs[0].attempts[0].output.data) == {"n": 1}

    client.cancel(running, "enough")  # the worker's handler stops: it ends CANCELLED
    second = next(stream)
    assert ids(second) == [running]
    assert second.remaining == 1
    assert second.executions[0].state == pb.EXECUTION_STATE_CANCELLED
    assert second.executions[0].reason_message == "enough"

    client.cancel(queued)
    third = next(stream)
    assert ids(third) == [queued]
    assert third.remaining == 0
    assert list(stream) == []  # the stream ends after the last one, OK
    # The message is the execution as GetExecution returns it.
    assert first.executions[0] == client.get(done)
    assert third.executions[0] == client.get(queued)


def test_executions_that_finish_together_come_in_few_messages(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    procs.worker(server, slots=50)
    response = client.submit_batch([spec(task("echo", input={"n": n})) for n in range(500)])
    execution_ids = [result.execution_id for result in response.results]
    messages = list(wait(client, execution_ids))
    delivered = [execution_id for message in messages for execution_id in ids(message)]
    assert sorted(delivered) == sorted(execution_ids)
    assert [message.remaining for message in messages] == [
        len(execution_ids) - sum(len(m.executions) for m in messages[: index + 1]) for index in range(len(messages))
    ]
    assert len(messages) < len(execution_ids) / 5, len(messages)


def test_bad_input_is_refused_naming_the_field_or_the_id(client: Client) -> None:
    known = submitted(client, spec(task(UNSERVED)))
    unknown = "0" * 32

    def refused(execution_ids: list[str]) -> tuple[grpc.StatusCode, str]:
        status = fails(lambda: list(wait(client, execution_ids, timeout_s=10)))
        return status.code, status.details

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert refused([]) == (invalid, "execution_ids: at least one execution id is required")
    assert refused([known] * 10_001) == (invalid, "execution_ids: at most 10000 per call, got 10001")
    assert refused([known, unknown, known]) == (
        invalid,
        f"execution_ids[2]: {known} is given twice (also execution_ids[0])",
    )
    assert refused([known, "nope"]) == (invalid, "execution_ids[1]: 'nope' is not an execution id (32 hex digits)")
    assert refused([known, known.upper()])[0] is invalid
    assert refused([known, unknown]) == (grpc.StatusCode.NOT_FOUND, f"no execution with id '{unknown}'")


def test_the_deadline_ends_the_stream_after_what_finished_with_deadline_exceeded(client: Client) -> None:
    done = submitted(client, spec(task(UNSERVED)))
    client.cancel(done)
    waiting = [submitted(client, spec(task(UNSERVED))) for _ in range(2)]
    received: list[tpb.WaitExecutionsResponse] = []
    status = fails(lambda: received.extend(wait(client, [*waiting, done], timeout_s=1.0)))
    assert [ids(message) for message in received] == [[done]]
    # The server's own words, not gRPC's: it answered before the caller's deadline.
    assert status.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert status.details == "2 of 3 executions had not finished by the call's deadline"


@pytest.mark.parametrize("restart", [False, True], ids=["shutdown", "restart"])
def test_a_server_going_away_ends_the_stream_with_unavailable(
    procs: Cluster, server: ServerProcess, client: Client, restart: bool
) -> None:
    waiting = submitted(client, spec(task(UNSERVED)))
    stream = wait(client, [waiting])
    assert ids(next(stream)) == []  # the first message comes at once, though nothing has finished
    server.process.stop()
    status = fails(lambda: next(stream))
    assert status.code is grpc.StatusCode.UNAVAILABLE
    if restart:
        restarted = procs.server_at(server.address)
        again = Client.of(restarted)
        try:
            again.cancel(waiting)
            assert [ids(message) for message in wait(again, [waiting])] == [[waiting]]
        finally:
            again.close()
