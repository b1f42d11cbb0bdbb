"""Bad requests get INVALID_ARGUMENT with a message that names the field, and change nothing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from tests.harness import Cluster, ServerProcess, cluster
from tests.integration.server.support import Client, duration, fails, spec, task

MAX_PAYLOAD_BYTES = 1024


@dataclass(frozen=True)
class BadRequest:
    """A call that must fail with INVALID_ARGUMENT; its message starts with `field`, and contains `mentions`."""

    id: str
    call: Callable[[Client], object]
    field: str
    mentions: tuple[str, ...] = ()


def submit(execution: tpb.ExecutionSpec, admission: int = tpb.ADMISSION_MODE_FAIL_FAST) -> Callable[[Client], object]:
    request = tpb.SubmitExecutionRequest(execution=execution, admission=admission)  # type: ignore[arg-type]
    return lambda client: client.tasks.SubmitExecution(request, timeout=10)


def with_task(**fields: object) -> tpb.ExecutionSpec:
    return spec(tpb.TaskSpec(**fields))  # type: ignore[arg-type]


def with_timeout(seconds: float) -> tpb.ExecutionSpec:
    execution = spec()
    execution.timeout.CopyFrom(duration(seconds))
    return execution


def watch(execution_id: str, after_sequence: int = 0) -> Callable[[Client], object]:
    request = tpb.WatchExecutionRequest(execution_id=execution_id, after_sequence=after_sequence)
    return lambda client: list(client.tasks.WatchExecution(request, timeout=10))


def listing(**fields: object) -> Callable[[Client], object]:
    request = tpb.ListExecutionsRequest(**fields)  # type: ignore[arg-type]
    return lambda client: client.tasks.ListExecutions(request, timeout=10)


BAD_REQUESTS = [
    BadRequest("no-tasks", submit(tpb.ExecutionSpec()), "execution.tasks", ("at least one",)),
    BadRequest(
        "missing-execution",
        lambda client: client.tasks.SubmitExecution(tpb.SubmitExecutionRequest(), timeout=10),
        "execution",
        ("required",),
    ),
    BadRequest("empty-handler", submit(with_task(handler="")), "execution.tasks[0].handler"),
    BadRequest("blank-handler", submit(with_task(handler="  ")), "execution.tasks[0].handler"),
    BadRequest(
        "duplicate-task-id",
        submit(spec(task("echo", "a"), task("echo", "b"), task("echo", "a"))),
        "execution.tasks[2].task_id",
        ("'a'",),
    ),
    BadRequest("missing-task-id", submit(spec(task("echo", "a"), task("echo"))), "execution.tasks[1].task_id"),
    BadRequest("bad-task-id", submit(spec(task("echo", "no spaces"))), "execution.tasks[0].task_id"),
    BadRequest(
        "unknown-depends-on",
        submit(spec(task("echo", "a"), task("echo", "b", depends_on=["nope"]))),
        "execution.tasks[1].depends_on",
        ("'nope'",),
    ),
    BadRequest(
        "self-dependency",
        submit(spec(task("echo", "a", depends_on=["a"]))),
        "execution.tasks[0].depends_on",
    ),
    BadRequest(
        "cycle",
        submit(
            spec(
                task("echo", "start"),
                task("echo", "step-x", depends_on=["start", "step-z"]),
                task("echo", "step-y", depends_on=["step-x"]),
                task("echo", "step-z", depends_on=["step-y"]),
            )
        ),
        "execution.tasks",
        ("cycle", "step-x -> ", "step-y -> ", "step-z -> "),
    ),
    BadRequest(
        "negative-task-timeout",
        submit(with_task(handler="echo", timeout=duration(-1))),
        "execution.tasks[0].timeout",
    ),
    BadRequest("zero-execution-timeout", submit(with_timeout(0)), "execution.timeout"),
    BadRequest("negative-execution-timeout", submit(with_timeout(-5)), "execution.timeout"),
    BadRequest(
        "payload-over-limit",
        submit(with_task(handler="echo", input=pb.Payload(data=b'"' + b"x" * MAX_PAYLOAD_BYTES + b'"'))),
        "execution.tasks[0].input",
        (str(MAX_PAYLOAD_BYTES),),
    ),
    BadRequest(
        "invalid-json",
        submit(with_task(handler="echo", input=pb.Payload(data=b"{not json"))),
        "execution.tasks[0].input",
        ("JSON",),
    ),
    BadRequest(
        "invalid-json-default-content-type",
        submit(with_task(handler="echo", input=pb.Payload(data=b"[1, 2"))),
        "execution.tasks[0].input",
        ("JSON",),
    ),
    BadRequest(
        "retry-max-attempts",
        submit(with_task(handler="echo", retry_policy=pb.RetryPolicy(max_attempts=101))),
        "execution.tasks[0].retry_policy.max_attempts",
    ),
    BadRequest(
        "retry-backoff-coefficient",
        submit(with_task(handler="echo", retry_policy=pb.RetryPolicy(backoff_coefficient=0.5))),
        "execution.tasks[0].retry_policy.backoff_coefficient",
    ),
    BadRequest(
        "retry-negative-interval",
        submit(with_task(handler="echo", retry_policy=pb.RetryPolicy(initial_interval=duration(-1)))),
        "execution.tasks[0].retry_policy.initial_interval",
    ),
    BadRequest("unknown-admission-mode", submit(spec(), admission=7), "admission", ("7",)),
    BadRequest(
        "empty-batch",
        lambda client: client.tasks.SubmitExecutions(tpb.SubmitExecutionsRequest(), timeout=10),
        "executions",
    ),
    BadRequest("negative-page-size", listing(page_size=-1), "page_size"),
    BadRequest("page-size-over-maximum", listing(page_size=1001), "page_size", ("1000",)),
    BadRequest("bad-page-token", listing(page_token="not-a-token"), "page_token"),
    BadRequest("unknown-state-filter", listing(states=[42]), "states"),
    BadRequest(
        "get-empty-id",
        lambda client: client.tasks.GetExecution(tpb.GetExecutionRequest(), timeout=10),
        "execution_id",
    ),
    BadRequest(
        "cancel-empty-id",
        lambda client: client.tasks.CancelExecution(tpb.CancelExecutionRequest(), timeout=10),
        "execution_id",
    ),
    BadRequest("watch-empty-id", watch(""), "execution_id"),
    BadRequest("watch-negative-after-sequence", watch("0" * 32, after_sequence=-1), "after_sequence"),
]


@pytest.fixture(scope="module")
def validating_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the table: each bad request is independent of the others."""
    for running in cluster(tmp_path_factory.mktemp("validation")):
        yield running.server("--max-payload-bytes", str(MAX_PAYLOAD_BYTES))


@pytest.fixture
def validating_client(validating_server: ServerProcess) -> Iterator[Client]:
    client = Client.of(validating_server)
    yield client
    client.close()


def assert_invalid(client: Client, bad: BadRequest) -> None:
    status = fails(lambda: bad.call(client))
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT, f"{bad.id}: {status}"
    assert re.match(rf"{re.escape(bad.field)}: \S", status.details), (
        f"{bad.id}: the message should name the field {bad.field!r}: {status.details!r}"
    )
    for word in bad.mentions:
        assert word in status.details, f"{bad.id}: the message should mention {word!r}: {status.details!r}"


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=[bad.id for bad in BAD_REQUESTS])
def test_a_bad_request_names_its_field(validating_client: Client, bad: BadRequest) -> None:
    assert_invalid(validating_client, bad)


def test_the_server_serves_on_after_every_bad_request_and_stored_nothing(procs: Cluster) -> None:
    client = Client.of(procs.server("--max-payload-bytes", str(MAX_PAYLOAD_BYTES)))
    try:
        for bad in BAD_REQUESTS:
            assert_invalid(client, bad)
        assert client.list_all() == []
        stats = client.stats()
        assert (stats.queue.size, stats.queue.waiting_submitters) == (0, 0), stats

        # A payload of exactly the limit is fine, and a good submit works.
        at_limit = pb.Payload(data=b'"' + b"x" * (MAX_PAYLOAD_BYTES - 2) + b'"')
        good = client.submit(spec(tpb.TaskSpec(handler="echo", input=at_limit)))
        assert good.execution.state == pb.EXECUTION_STATE_PENDING
        assert [execution.id for execution in client.list_all()] == [good.execution.id]
    finally:
        client.close()


def test_a_bad_item_of_a_batch_fails_alone(validating_client: Client) -> None:
    results = validating_client.submit_batch(
        [spec(name="fine"), spec(task("echo", "a", depends_on=["ghost"])), with_timeout(-1)]
    ).results
    fine, unknown, negative = results
    assert fine.execution_id, fine
    assert not fine.error_code, fine
    assert unknown.error_code == "INVALID_ARGUMENT", unknown
    assert unknown.error_message.startswith("executions[1].tasks[0].depends_on: "), unknown.error_message
    assert negative.error_code == "INVALID_ARGUMENT", negative
    assert negative.error_message.startswith("executions[2].timeout: "), negative.error_message
    assert validating_client.get(fine.execution_id).name == "fine"
