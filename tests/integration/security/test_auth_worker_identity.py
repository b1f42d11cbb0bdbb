"""A worker is who its credential says. A stream with worker B's token that reports on worker A's attempt
is ended with PERMISSION_DENIED and the attempt is unaffected; B cannot take A's attempt in its hello
either. And each identity has at most its number of worker streams open."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from taskwire.client import State, TaskRunTransition
from taskwire.v1 import types_pb2 as pb
from taskwire.v1 import worker_service_pb2 as wpb
from tests.harness import Cluster, wait_for
from tests.integration.security.auth_support import Secured, hello_frame, raw_stream, refusal, start_secured


@pytest.fixture
def secured(procs: Cluster) -> Secured:
    return start_secured(procs)


def _completed(task_run_id: str, attempt: int) -> bytes:
    ref = wpb.AttemptRef(task_run_id=task_run_id, attempt=attempt)
    done = wpb.AttemptCompleted(ref=ref, output=pb.Payload(data=b'"stolen"', content_type="application/json"))
    return wpb.ConnectRequest(messages=[wpb.WorkerMessage(completed=done)]).SerializeToString()


async def _welcome(call: grpc.aio.StreamStreamCall[bytes, bytes]) -> wpb.Welcome:
    frame = await asyncio.wait_for(call.read(), 10)
    assert isinstance(frame, bytes), frame
    return wpb.ConnectResponse.FromString(frame).messages[0].welcome


async def test_a_worker_reporting_on_another_identitys_attempt_is_refused(secured: Secured, procs: Cluster) -> None:
    procs.worker(secured.server, name="worker-a", env={"TASKWIRE_TOKEN": secured.tokens["worker-a"]})
    with secured.client("alice") as alice:
        execution = alice.submit("sleep", {"seconds": 60})
        events = (e for e in alice.watch(execution.id) if isinstance(e, TaskRunTransition))
        running = next(e for e in events if e.to_state is State.RUNNING)
        key = (running.task_run_id, running.attempt)

        async with grpc.aio.insecure_channel(secured.address) as channel:
            # Worker B says hello claiming A's attempt: not adopted.
            call = raw_stream(channel, secured.metadata("worker-b"))
            await call.write(hello_frame("worker-a", running=(key,)))
            welcome = await _welcome(call)
            assert [(r.task_run_id, r.attempt) for r in welcome.rejected_attempts] == [key]
            assert list(welcome.adopted_attempts) == []
            # Then reports A's attempt complete: the stream is ended, nothing applied.
            code, details = await refusal(call, _completed(*key))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert f"attempt {key[0]}#{key[1]} is not held for identity 'worker-b'" in details

        after = alice.get(execution.id)
        assert after.state is State.RUNNING
        (task_run,) = after.task_runs
        assert task_run.state is State.RUNNING
        assert [(a.number, a.worker_id, a.outcome.value) for a in task_run.attempts] == [(1, "worker-a", "RUNNING")]
        assert task_run.attempts[0].output is None

        # A still holds it: a cancel reaches A's handler, which acknowledges.
        alice.cancel(execution.id)
        assert alice.wait_finished(execution.id).state is State.CANCELLED
    secured.server.process.wait_for_line(
        rf"audit action=denied identity=worker-b method=Connect target={key[0]}#{key[1]} code=PERMISSION_DENIED"
    )


async def test_an_identity_has_at_most_its_worker_streams(secured: Secured) -> None:
    async with grpc.aio.insecure_channel(secured.address) as channel:
        first = raw_stream(channel, secured.metadata("worker-b"))  # worker-b may hold one stream
        await first.write(hello_frame("b-1"))
        await _welcome(first)
        code, details = await refusal(raw_stream(channel, secured.metadata("worker-b")))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details == "identity 'worker-b' already has 1 worker streams open, its most"
        other = raw_stream(channel, secured.metadata("worker-a"))  # another identity is not affected
        await other.write(hello_frame("a-1"))
        await _welcome(other)
        with secured.client("admin") as admin:
            assert sorted(w.name for w in admin.workers()) == ["a-1", "b-1"]
            first.cancel()
            wait_for(lambda: [w.name for w in admin.workers()] == ["a-1"], what="b-1 gone")

        async def reopened() -> bool:
            again = raw_stream(channel, secured.metadata("worker-b"))
            await again.write(hello_frame("b-3"))
            try:
                await _welcome(again)
            except grpc.aio.AioRpcError:
                return False
            again.cancel()
            return True

        for _ in range(50):  # the slot is given back when the server has seen the stream end
            if await reopened():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("worker-b could not open a stream again after closing its first")
        other.cancel()
