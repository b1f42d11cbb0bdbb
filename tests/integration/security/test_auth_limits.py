"""The submit rate of an identity (a token bucket): over it, RESOURCE_EXHAUSTED with a RetryInfo in the
status details, nothing stored; the SDK raises RateLimited with the hint, or waits it out and retries.
Other identities keep their own rate."""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from taskwire.client import RateLimited, RpcRetry, State
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from tests.harness import Cluster
from tests.integration.security.auth_support import Secured, start_secured
from tests.integration.server.support import spec


@pytest.fixture
def secured(procs: Cluster) -> Secured:
    return start_secured(procs)


def test_over_the_submit_rate_is_resource_exhausted_with_a_retry_hint(secured: Secured) -> None:
    # "limited": 1 submit a second, bursts of 2.
    with grpc.insecure_channel(secured.address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        request = tpb.SubmitExecutionRequest(execution=spec())
        for _ in range(2):
            stub.SubmitExecution(request, metadata=secured.metadata("limited"), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitExecution(request, metadata=secured.metadata("limited"), timeout=10)
        error = refused.value
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "identity 'limited' is over its submit rate (1/s, bursts of 2)" in (error.details() or "")
        status = rpc_status.from_call(error)
        assert status is not None
        (detail,) = status.details
        hint = error_details_pb2.RetryInfo()
        assert detail.Unpack(hint)
        assert 0 < hint.retry_delay.ToTimedelta().total_seconds() <= 1.0
        # A batch counts each execution, and is refused whole.
        batch = tpb.SubmitExecutionsRequest(executions=[spec(), spec()])
        with pytest.raises(grpc.RpcError) as refused_batch:
            stub.SubmitExecutions(batch, metadata=secured.metadata("limited"), timeout=10)
        assert refused_batch.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with secured.client("admin") as admin:
        assert len(list(admin.list())) == 2  # the refused submits stored nothing
        for _ in range(5):
            admin.submit("echo", {})  # the default rate of another identity is not touched


def test_the_sdk_raises_the_hint_or_waits_it_out(secured: Secured) -> None:
    with secured.client("limited") as limited:
        limited.submit("echo", {})
        limited.submit("echo", {})
        with pytest.raises(RateLimited) as refused:
            limited.submit("echo", {})
        assert 0 < refused.value.retry_after_s <= 1.0
    with secured.client("limited", retry=RpcRetry(max_attempts=5)) as patient:
        # Four more submits need at least two seconds of refill whatever the bucket held: each refused
        # one is retried after the server's hint, and all are accepted.
        started = time.monotonic()
        accepted = [patient.submit("echo", {"n": n}) for n in range(4)]
        assert time.monotonic() - started >= 1.5
        assert all(snapshot.state is State.PENDING for snapshot in accepted)
    with secured.client("admin") as admin:
        assert len(list(admin.list())) == 6
    secured.server.process.wait_for_line(
        r"audit action=denied identity=limited method=StreamSubmits target=- role=submitter code=RESOURCE_EXHAUSTED"
    )
