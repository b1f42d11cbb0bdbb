"""StreamSubmits under an auth file: a worker identity may not open the stream (PERMISSION_DENIED naming the
method, the SDK does not fall back to SubmitExecution), and each streamed submit is charged to its caller's
submit rate: the one over it is answered RESOURCE_EXHAUSTED with a retry hint, audited, nothing stored; the SDK
raises RateLimited without retries, or waits the hint out and submits."""

from __future__ import annotations

import time

import grpc
import grpc.aio
import pytest

from taskwire.client import AsyncClient, PermissionDenied, RateLimited, RpcRetry, State
from tests.harness import Cluster
from tests.integration.security.auth_support import NO_RETRY, Secured, start_secured
from tests.integration.server.support import spec
from tests.integration.server.test_submit_stream import answers, ended_with, message, open_stream, streamed


@pytest.fixture
def secured(procs: Cluster) -> Secured:
    return start_secured(procs)


def stored(secured: Secured) -> list[str]:
    with secured.client("admin") as admin:
        return [snapshot.id for snapshot in admin.list()]


async def test_a_worker_identity_may_not_open_the_submit_stream(secured: Secured) -> None:
    async with grpc.aio.insecure_channel(secured.address) as channel:
        # Refused as it opens, before any submit is read. (Nothing is written: a write that fails as the call
        # ends makes grpc.aio report INTERNAL in place of the server's status, grpc/grpc#36066; the SDK's
        # submit below keeps the server's.)
        status = await ended_with(open_stream(channel, metadata=secured.metadata("worker-a")))
    assert status.code is grpc.StatusCode.PERMISSION_DENIED, status
    assert status.details == "role worker may not call StreamSubmits; it needs admin or submitter", status
    async with AsyncClient(secured.address, token=secured.tokens["worker-a"], retry=NO_RETRY) as worker:
        with pytest.raises(PermissionDenied, match="role worker may not call StreamSubmits"):
            await worker.submit("echo", {})
    secured.server.process.wait_for_line(
        r"audit action=denied identity=worker-a method=StreamSubmits target=- role=worker code=PERMISSION_DENIED"
    )
    assert stored(secured) == []
    # A refused stream is not a server without the method: the SDK did not try SubmitExecution instead.
    assert "method=SubmitExecution" not in secured.server.process.output


async def test_each_streamed_submit_is_charged_to_the_callers_rate(secured: Secured) -> None:
    # "limited": 1 submit a second, bursts of 2.
    async with grpc.aio.insecure_channel(secured.address) as channel:
        call = open_stream(channel, metadata=secured.metadata("limited"))
        await call.write(message(*(streamed(n, spec(name=f"n{n}")) for n in range(3))))
        got = await answers(call, 3)
        await call.done_writing()
        assert (await ended_with(call)).code is grpc.StatusCode.OK
    refused = [answer for answer in got.values() if answer.error_code]
    assert len(refused) == 1, got
    (over,) = refused
    assert over.error_code == "RESOURCE_EXHAUSTED", over
    assert over.error_message.startswith("identity 'limited' is over its submit rate (1/s, bursts of 2)"), over
    assert over.HasField("retry_after"), over
    assert 0 < over.retry_after.ToTimedelta().total_seconds() <= 1.0, over
    assert not over.HasField("response"), over
    secured.server.process.wait_for_line(
        r"audit action=denied identity=limited method=StreamSubmits target=- role=submitter code=RESOURCE_EXHAUSTED"
    )
    assert sorted(stored(secured)) == sorted(
        answer.response.execution.id for answer in got.values() if not answer.error_code
    )

    # The bucket is empty: without retries the SDK raises the hint; with them, it waits the hint out.
    started = time.monotonic()
    with secured.client("limited") as hasty, pytest.raises(RateLimited) as raised:
        hasty.submit("echo", {})
    hint_s = raised.value.retry_after_s
    assert 0 < hint_s <= 1.0
    with secured.client("limited", retry=RpcRetry(max_attempts=3)) as patient:
        accepted = patient.submit("echo", {"after": "the hint"})
    assert accepted.state is State.PENDING
    assert time.monotonic() - started >= hint_s - 0.05, "the retried submit was accepted before the bucket refilled"
    assert len(stored(secured)) == 3
