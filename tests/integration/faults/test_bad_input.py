"""Bad well-known values, unparseable bytes and large legal payloads: a precise status, nothing stored,
one log line at most, and everyone else keeps being served.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from taskwire.v1 import worker_service_pb2 as wpb
from tests.harness import Cluster, ServerProcess
from tests.integration.server.support import Client, fails, spec, task
from tests.integration.workers.support import ScriptedWorker, attempt_ref, completed, ref_of

SUBMIT = "/taskwire.v1.TaskService/SubmitExecution"
METHODS = [
    "/taskwire.v1.TaskService/SubmitExecution",
    "/taskwire.v1.TaskService/SubmitExecutions",
    "/taskwire.v1.TaskService/GetExecution",
    "/taskwire.v1.TaskService/ListExecutions",
    "/taskwire.v1.TaskService/CancelExecution",
]


def _with_timeout(seconds: int, nanos: int = 0) -> tpb.ExecutionSpec:
    execution = spec()
    execution.timeout.CopyFrom(duration_pb2.Duration(seconds=seconds, nanos=nanos))
    return execution


def _not_before(seconds: int) -> tpb.ExecutionSpec:
    execution = spec()
    execution.not_before.CopyFrom(timestamp_pb2.Timestamp(seconds=seconds))
    return execution


def _task_timeout(seconds: int, nanos: int = 0) -> tpb.ExecutionSpec:
    execution = spec(task())
    execution.tasks[0].timeout.CopyFrom(duration_pb2.Duration(seconds=seconds, nanos=nanos))
    return execution


OUT_OF_RANGE = {
    "timeout-1e14s": (_with_timeout(10**14), "execution.timeout"),
    "timeout-negative-nanos": (_with_timeout(1, -5), "execution.timeout"),
    "task-timeout-1e14s": (_task_timeout(10**14), "execution.tasks[0].timeout"),
    "not-before-year-10000": (_not_before(253_402_300_800 + 86_400), "execution.not_before"),
}


@pytest.mark.parametrize("case", OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_out_of_range_well_known_values_are_invalid_arguments(
    server: ServerProcess, client: Client, case: tuple[tpb.ExecutionSpec, str]
) -> None:
    execution, field = case
    status = fails(lambda: client.tasks.SubmitExecution(tpb.SubmitExecutionRequest(execution=execution), timeout=10))
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT, status
    assert field in status.details, status
    assert not client.tasks.ListExecutions(tpb.ListExecutionsRequest(), timeout=10).executions


def test_one_bad_item_fails_alone_in_a_batch(server: ServerProcess, client: Client) -> None:
    request = tpb.SubmitExecutionsRequest(executions=[spec(), _with_timeout(10**14), spec()])
    results = client.tasks.SubmitExecutions(request, timeout=10).results
    assert [bool(result.execution_id) for result in results] == [True, False, True]
    assert results[1].error_code == "INVALID_ARGUMENT", results[1]
    assert "timeout" in results[1].error_message


def _identity(data: bytes) -> bytes:
    return data


@pytest.mark.parametrize("method", METHODS)
def test_invalid_utf8_is_invalid_argument_with_one_log_line(server: ServerProcess, client: Client, method: str) -> None:
    # Field 1 as a length-delimited string holding bytes that are not UTF-8.
    garbage = b"\x0a\x03\xff\xfe\xfd"
    call = client.channel.unary_unary(method, request_serializer=_identity, response_deserializer=_identity)
    before = len(server.process.lines)
    status = fails(lambda: call(garbage, timeout=10))
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT, status
    client.tasks.ListExecutions(tpb.ListExecutionsRequest(), timeout=10)  # still serving
    new = server.process.lines[before:]
    assert not any("Traceback" in line for line in new), "\n".join(new)
    assert len(new) <= 1, "\n".join(new)


def test_large_legal_inputs_page_within_the_message_limit(procs: Cluster) -> None:
    big = procs.server("--max-payload-bytes", str(2 * 1024 * 1024))
    client = Client.of(big)
    try:
        blob = "x" * (1536 * 1024)
        for _ in range(4):
            client.tasks.SubmitExecution(
                tpb.SubmitExecutionRequest(execution=spec(task("echo", input={"blob": blob}))), timeout=30
            )
        seen = 0
        token = ""
        while True:
            page = client.tasks.ListExecutions(tpb.ListExecutionsRequest(page_token=token), timeout=30)
            seen += len(page.executions)
            assert page.executions, "a page made no progress"
            token = page.next_page_token
            if not token:
                break
        assert seen == 4
    finally:
        client.close()


async def test_a_progress_struct_with_a_kindless_value_leaves_the_history_readable(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        submitted = stub.SubmitExecution(tpb.SubmitExecutionRequest(execution=spec(task("scripted"))), timeout=10)
        worker = ScriptedWorker(server.address, name="careless")
        try:
            await worker.connect()
            invocation = await worker.invocation()
            ref = ref_of(invocation)
            details = struct_pb2.Struct()
            details.fields["ok"].string_value = "fine"
            details.fields["broken"].CopyFrom(struct_pb2.Value())  # no kind set
            report = wpb.AttemptProgress(ref=attempt_ref(ref), fraction=0.5, message="half", details=details)
            await worker.send(wpb.WorkerMessage(progress=report), completed(ref, {"done": True}))
            events = list(
                stub.WatchExecution(tpb.WatchExecutionRequest(execution_id=submitted.execution.id), timeout=10)
            )
        finally:
            await worker.close()
    (progress,) = [e.event.progress for e in events if e.event.WhichOneof("body") == "progress"]
    assert (progress.fraction, progress.message) == (0.5, "half")
    # Go's and C++'s protojson (grpcurl, buf curl) refuse a Value with no kind; Python's prints null.
    assert all(value.WhichOneof("kind") for value in progress.details.fields.values()), progress.details
    for event in events:
        json_format.MessageToJson(event)
