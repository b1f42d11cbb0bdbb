"""The SDK and the CLI against a newer server: values from the future are shown, and nothing raises.

The server here is a real gRPC server on 127.0.0.1:0 that answers TaskService calls with crafted
messages: proto3 enums are open, so it sends state, reason code, outcome and log level numbers no
descriptor of this version knows, and a watch event whose body is a oneof member this version lacks.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from taskwire.client import (
    AsyncClient,
    Client,
    ExecutionEnded,
    ExecutionTransition,
    State,
    TaskLog,
    TaskRunTransition,
    UnknownEvent,
)
from taskwire.client._cli import ExitCode, main
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from taskwire.v1 import types_pb2 as pb
from tests.harness import BIN
from tests.unit.client import records
from tests.unit.client.records import at, execution_proto

# Numbers no descriptor of this version knows: a state, a reason code, an outcome, a log level.
STATE, REASON, OUTCOME, LEVEL = 42, 43, 44, 45
ENDED = "ex-ended"  # ended in a terminal state from the future
PAUSED = "ex-paused"  # in a non-terminal state from the future


def newer_execution(execution_id: str, *, ended: bool) -> pb.Execution:
    message = execution_proto(
        records.snapshot(
            State.FAILED, records.task_run(state=State.FAILED, execution_id=execution_id), execution_id=execution_id
        )
    )
    message.state = STATE  # type: ignore[assignment]
    message.reason_code = REASON  # type: ignore[assignment]
    message.reason_message = "a reason this client has never heard of"
    if not ended:
        message.ClearField("ended_at")
    run = message.task_runs[0]
    run.state = STATE  # type: ignore[assignment]
    run.reason_code = REASON  # type: ignore[assignment]
    run.attempts[0].outcome = OUTCOME  # type: ignore[assignment]
    return message


def history(execution_id: str) -> list[pb.ExecutionEvent]:
    def event(sequence: int, **body: Any) -> pb.ExecutionEvent:
        message = records.event(sequence, **body)
        message.execution_id = execution_id
        return message

    # A oneof member added by a newer protocol (field 99): this version keeps it as an unknown field.
    newer_kind = pb.ExecutionEvent.FromString(event(4).SerializeToString() + b"\x9a\x06\x02\x08\x01")
    return [
        event(1, execution_transition=pb.ExecutionTransition(to_state=pb.EXECUTION_STATE_PENDING)),
        event(
            2,
            task_run_transition=pb.TaskRunTransition(
                task_run_id="tr-main",
                task_id="main",
                from_state=pb.TASK_RUN_STATE_RUNNING,
                to_state=STATE,  # type: ignore[arg-type]
                reason_code=REASON,  # type: ignore[arg-type]
                reason_message="a reason this client has never heard of",
                attempt=1,
                worker_id="worker-1",
                attempt_outcome=OUTCOME,  # type: ignore[arg-type]
            ),
        ),
        event(3, log=pb.TaskLog(task_run_id="tr-main", task_id="main", attempt=1, level=LEVEL, text="hello")),  # type: ignore[arg-type]
        newer_kind,
        event(
            5,
            execution_transition=pb.ExecutionTransition(
                from_state=pb.EXECUTION_STATE_RUNNING,
                to_state=STATE,  # type: ignore[arg-type]
                reason_code=REASON,  # type: ignore[arg-type]
                reason_message="a reason this client has never heard of",
            ),
        ),
    ]


class NewerTaskService(task_service_pb2_grpc.TaskServiceServicer):
    """Answers as a newer server would; the history ends (the stream closes) after its last event."""

    def GetExecution(self, request: tpb.GetExecutionRequest, context: grpc.ServicerContext) -> tpb.GetExecutionResponse:
        return tpb.GetExecutionResponse(
            execution=newer_execution(request.execution_id, ended=request.execution_id != PAUSED)
        )

    def ListExecutions(
        self, request: tpb.ListExecutionsRequest, context: grpc.ServicerContext
    ) -> tpb.ListExecutionsResponse:
        return tpb.ListExecutionsResponse(
            executions=[newer_execution(ENDED, ended=True), newer_execution(PAUSED, ended=False)]
        )

    def WatchExecution(
        self, request: tpb.WatchExecutionRequest, context: grpc.ServicerContext
    ) -> Iterator[tpb.WatchExecutionResponse]:
        for event in history(request.execution_id):
            if event.sequence > request.after_sequence:
                yield tpb.WatchExecutionResponse(event=event)

    def WaitExecutions(
        self, request: tpb.WaitExecutionsRequest, context: grpc.ServicerContext
    ) -> Iterator[tpb.WaitExecutionsResponse]:
        """Every execution asked for has ended (in a state this version does not know)."""
        yield tpb.WaitExecutionsResponse(executions=[newer_execution(i, ended=True) for i in request.execution_ids])


@pytest.fixture(scope="module")
def newer_server() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    # The calls it does not override answer UNIMPLEMENTED, as the base servicer does.
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(NewerTaskService(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()


class OlderTaskService(NewerTaskService):
    """A server from before WaitExecutions: the call answers UNIMPLEMENTED, as the base servicer does."""

    def WaitExecutions(
        self, request: tpb.WaitExecutionsRequest, context: grpc.ServicerContext
    ) -> Iterator[tpb.WaitExecutionsResponse]:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")


@pytest.fixture(scope="module")
def older_server() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(OlderTaskService(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()


def cli(address: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--server", address, *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# ---- The SDK ------------------------------------------------------------------------------------


def test_get_keeps_every_value_from_the_future(newer_server: str) -> None:
    with Client(newer_server) as client:
        snapshot = client.get(ENDED)
    assert snapshot.state.value == "UNKNOWN(42)"
    assert not snapshot.state.is_known
    assert snapshot.reason is not None
    assert snapshot.reason.code.value == "UNKNOWN(43)"
    assert snapshot.is_terminal, "ended_at is set: the state from the future is terminal"
    (run,) = snapshot.task_runs
    assert (run.state.value, run.attempts[0].outcome.value) == ("UNKNOWN(42)", "UNKNOWN(44)")
    view = snapshot.to_json()
    assert (view["state"], view["reason"]["code"]) == ("UNKNOWN(42)", "UNKNOWN(43)")
    assert view["task_runs"][0]["attempts"][0]["outcome"] == "UNKNOWN(44)"


def test_list_keeps_them(newer_server: str) -> None:
    with Client(newer_server) as client:
        listed = list(client.list())
    assert [(s.id, s.state.value, s.is_terminal) for s in listed] == [
        (ENDED, "UNKNOWN(42)", True),
        (PAUSED, "UNKNOWN(42)", False),
    ]


def test_watch_yields_every_event(newer_server: str) -> None:
    with Client(newer_server) as client:
        events = list(client.watch(ENDED))
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    first, run, log, newer, last = events
    assert isinstance(first, ExecutionTransition)
    assert isinstance(run, TaskRunTransition)
    assert (run.to_state.value, run.attempt_outcome and run.attempt_outcome.value) == ("UNKNOWN(42)", "UNKNOWN(44)")
    assert run.reason is not None
    assert run.reason.code.value == "UNKNOWN(43)"
    assert isinstance(log, TaskLog)
    assert log.level.value == "UNKNOWN(45)"
    assert isinstance(newer, UnknownEvent)
    assert newer.time == at(4)
    assert isinstance(last, ExecutionTransition)
    assert last.to_state.value == "UNKNOWN(42)"


def test_wait_ends_with_the_state_it_does_not_know(newer_server: str) -> None:
    with Client(newer_server) as client:
        done = client.wait_finished(ENDED)
        assert done.state.value == "UNKNOWN(42)"
        with pytest.raises(ExecutionEnded) as raised:
            client.wait(ENDED)
    assert raised.value.state.value == "UNKNOWN(42)"
    assert raised.value.reason_code is not None
    assert "UNKNOWN(42) (UNKNOWN(43): a reason this client has never heard of)" in str(raised.value)


async def test_wait_follows_the_watch_on_a_server_older_than_wait_executions(older_server: str) -> None:
    with Client(older_server) as client:
        assert client.wait_finished(ENDED).state.value == "UNKNOWN(42)"
    async with AsyncClient(older_server) as async_client:
        assert (await async_client.wait_finished(ENDED)).state.value == "UNKNOWN(42)"
    code, _, err = cli(older_server, "wait", ENDED, PAUSED)  # several ids need WaitExecutions
    assert code == 4
    assert "upgrade taskwire-server" in err


async def test_the_async_client_keeps_them_too(newer_server: str) -> None:
    async with AsyncClient(newer_server) as client:
        snapshot = await client.get(PAUSED)
        events = [event async for event in client.watch(ENDED)]
    assert (snapshot.state.value, snapshot.is_terminal) == ("UNKNOWN(42)", False)
    assert [type(e).__name__ for e in events] == [
        "ExecutionTransition",
        "TaskRunTransition",
        "TaskLog",
        "UnknownEvent",
        "ExecutionTransition",
    ]


# ---- The CLI ------------------------------------------------------------------------------------


def test_cli_get_shows_them(newer_server: str) -> None:
    code, out, err = cli(newer_server, "get", ENDED)
    assert (code, err) == (ExitCode.OK, "")
    assert "UNKNOWN(42)" in out
    assert "UNKNOWN(43): a reason this client has never heard of" in out


def test_cli_get_json_shows_them(newer_server: str) -> None:
    code, out, _ = cli(newer_server, "get", ENDED, "--json")
    assert code == ExitCode.OK
    view = json.loads(out)
    assert (view["state"], view["reason"]["code"], view["task_runs"][0]["state"]) == (
        "UNKNOWN(42)",
        "UNKNOWN(43)",
        "UNKNOWN(42)",
    )


def test_cli_list_shows_them(newer_server: str) -> None:
    code, out, _ = cli(newer_server, "list")
    assert code == ExitCode.OK
    assert out.count("UNKNOWN(42)") == 2
    code, out, _ = cli(newer_server, "list", "--json")
    assert code == ExitCode.OK
    assert [view["state"] for view in json.loads(out)["executions"]] == ["UNKNOWN(42)", "UNKNOWN(42)"]


def test_cli_watch_shows_every_event_and_exits_as_not_succeeded(newer_server: str) -> None:
    code, out, err = cli(newer_server, "watch", ENDED)
    assert code == ExitCode.FAILED, err
    lines = out.splitlines()
    assert lines[1].endswith(
        "task main UNKNOWN(42) UNKNOWN(43): a reason this client has never heard of (attempt 1 UNKNOWN(44))"
    )
    assert lines[2].endswith("task main log UNKNOWN(45) hello")
    assert lines[3].endswith("an event of a kind this version does not know")
    assert lines[4].endswith("execution UNKNOWN(42) UNKNOWN(43): a reason this client has never heard of")
    assert lines[-1] == f"execution {ENDED} UNKNOWN(42) (UNKNOWN(43): a reason this client has never heard of)"


def test_cli_watch_json_prints_every_event(newer_server: str) -> None:
    code, out, _ = cli(newer_server, "watch", ENDED, "--json")
    assert code == ExitCode.FAILED
    events = [json.loads(line) for line in out.splitlines()]
    assert [int(event["sequence"]) for event in events] == [1, 2, 3, 4, 5]
    assert events[1]["task_run_transition"]["to_state"] == STATE  # the wire's own JSON form: the number


def test_cli_wait_reports_the_final_state(newer_server: str) -> None:
    code, out, err = cli(newer_server, "wait", ENDED)
    assert (code, out) == (ExitCode.FAILED, "")
    assert (
        err.strip() == f"taskwire: execution {ENDED} UNKNOWN(42) (UNKNOWN(43): a reason this client has never heard of)"
    )


@pytest.mark.parametrize("argv", [["get", ENDED], ["list"], ["watch", ENDED], ["wait", ENDED, "--json"]])
def test_the_real_binary_prints_no_traceback(newer_server: str, argv: list[str]) -> None:
    result = subprocess.run(
        [str(BIN / "taskwire"), "--server", newer_server, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (ExitCode.OK, ExitCode.FAILED), result.stderr
    assert "UNKNOWN(42)" in result.stdout
