"""The transport's own limits: the largest message and the largest metadata a server accepts."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from taskwire.client import AsyncClient, ExecutionSnapshot, ValidationError
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from tests.harness import Cluster
from tests.integration.server.support import spec, task

pytestmark = pytest.mark.timeout(60)


def test_metadata_and_messages_past_the_limits_are_resource_exhausted(procs: Cluster) -> None:
    server = procs.server("--max-metadata-bytes", "2048", "--max-payload-bytes", "1000", "--max-message-bytes", "70000")
    with grpc.insecure_channel(server.address) as channel:
        stats = task_service_pb2_grpc.TaskServiceStub(channel).GetStats
        submit = task_service_pb2_grpc.TaskServiceStub(channel).SubmitExecution
        stats(tpb.GetStatsRequest(), timeout=10, metadata=(("x-note", "a" * 1000),))
        with pytest.raises(grpc.RpcError) as headers:
            stats(tpb.GetStatsRequest(), timeout=10, metadata=(("x-note", "a" * 4000),))
        assert headers.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

        with pytest.raises(grpc.RpcError) as message:
            submit(tpb.SubmitExecutionRequest(execution=spec(task(input={"blob": "b" * 80_000}))), timeout=10)
        assert message.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # Under the message limit, the payload limit answers (with the field) as before.
        with pytest.raises(grpc.RpcError) as payload:
            submit(tpb.SubmitExecutionRequest(execution=spec(task(input={"blob": "b" * 5000}))), timeout=10)
        assert payload.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert stats(tpb.GetStatsRequest(), timeout=10).queue.capacity > 0


def test_a_message_limit_too_small_for_a_payload_is_a_usage_error(procs: Cluster) -> None:
    with pytest.raises(RuntimeError, match=r"(?s)exited \(2\).*max message bytes must exceed max payload bytes"):
        procs.server("--max-payload-bytes", "100000", "--max-message-bytes", "100000")


async def test_submits_sharing_the_sdks_stream_never_fail_for_a_message_limit_at_its_smallest(procs: Cluster) -> None:
    """At the smallest message limit a server takes, many submits at once still share the SDK's stream: each
    message stays under the limit, and one submit refused for its payload fails alone."""
    server = procs.server("--max-payload-bytes", "1000", "--max-message-bytes", str(1000 + 64 * 1024))
    async with AsyncClient(server.address) as client:
        names = [f"many-{n}" for n in range(400)]
        small = [client.submit("echo", {"note": "n" * 600}, name=name) for name in names]
        too_large = client.submit("echo", {"blob": "b" * 47_000}, name="too-large")
        *submitted, refused = await asyncio.gather(*small, too_large, return_exceptions=True)
    assert [snapshot.name for snapshot in submitted if isinstance(snapshot, ExecutionSnapshot)] == names
    assert isinstance(refused, ValidationError), refused
    assert "payload" in str(refused)
