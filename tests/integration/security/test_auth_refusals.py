"""With an auth file, a call without a known credential is UNAUTHENTICATED and one of the wrong role is
PERMISSION_DENIED naming the method and the role it needs; either way nothing changes. Health checks and
reflection stay open. A real server process and a real worker process."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from taskwire.client import PermissionDenied, State, TaskRunTransition, Unauthenticated
from taskwire.common.bearer import bearer_metadata, new_token
from tests.harness import Cluster, wait_for
from tests.integration.security.auth_support import Secured, raw_stream, refusal, start_secured
from tests.integration.server.test_metrics import metrics_url, scrape, value


@pytest.fixture
def secured(procs: Cluster) -> Secured:
    return start_secured(procs)


def test_the_startup_line_says_authentication_is_on(secured: Secured) -> None:
    secured.server.process.wait_for_line(
        r"taskwire-server listening on .* authentication on: 7 identities \(1 admin, 1 reader, 3 submitter, 2 worker\)"
    )


@pytest.mark.parametrize("credential", ["missing", "wrong"])
def test_a_missing_or_wrong_token_is_unauthenticated_and_changes_nothing(secured: Secured, credential: str) -> None:
    token = None if credential == "missing" else new_token()
    with secured.client("admin") as admin:
        existing = admin.submit("echo", {"n": 1}, name="existing")
        with secured.client(token=token) as stranger:
            calls = {
                "submit": lambda: stranger.submit("echo", {"n": 2}),
                "get": lambda: stranger.get(existing.id),
                "list": lambda: list(stranger.list()),
                "cancel": lambda: stranger.cancel(existing.id),
                "delete": lambda: stranger.delete(existing.id),
                "stats": stranger.stats,
                "workers": stranger.workers,
            }
            for name, call in calls.items():
                with pytest.raises(Unauthenticated) as refused:
                    call()
                assert ("no credential" if token is None else "not known") in refused.value.message, name
        assert [snapshot.id for snapshot in admin.list()] == [existing.id]
        assert admin.get(existing.id).state is State.PENDING  # no worker: it waits, untouched


def test_a_worker_token_on_submit_is_denied_and_nothing_is_stored(secured: Secured) -> None:
    with secured.client("worker-a") as worker, pytest.raises(PermissionDenied) as refused:
        worker.submit("echo", {"n": 1})
    assert refused.value.message == "role worker may not call StreamSubmits; it needs admin or submitter"
    with secured.client("admin") as admin:
        assert list(admin.list()) == []
        assert admin.stats().queue.size == 0


def test_a_reader_token_on_cancel_is_denied_and_the_execution_goes_on(secured: Secured, procs: Cluster) -> None:
    procs.worker(secured.server, env={"TASKWIRE_TOKEN": secured.tokens["worker-a"]})
    with secured.client("alice") as alice, secured.client("reader") as reader:
        running = alice.submit("sleep", {"seconds": 30})
        started = (e for e in alice.watch(running.id) if isinstance(e, TaskRunTransition))
        assert next(e for e in started if e.to_state is State.RUNNING).worker_id
        with pytest.raises(PermissionDenied) as refused:
            reader.cancel(running.id, reason="not mine to cancel")
        assert refused.value.message == "role reader may not call CancelExecution; it needs admin or submitter"
        after = reader.get(running.id)  # a reader may read it
        assert after.state is State.RUNNING
        assert after.reason is None
        with pytest.raises(PermissionDenied, match="DeleteExecution; it needs admin"):
            reader.delete(running.id)
        with pytest.raises(PermissionDenied, match="DrainWorker; it needs admin"):
            reader.drain_worker("anyone")
        assert len(reader.workers()) == 1  # nobody was drained
        assert alice.cancel(running.id, reason="mine").id == running.id
        assert alice.wait_finished(running.id).state is State.CANCELLED


async def test_a_submitter_token_on_the_worker_stream_is_denied(secured: Secured) -> None:
    async with grpc.aio.insecure_channel(secured.address) as channel:
        for name, role in (("alice", "submitter"), ("reader", "reader")):
            code, details = await refusal(raw_stream(channel, secured.metadata(name)))
            assert code is grpc.StatusCode.PERMISSION_DENIED
            assert details == f"role {role} may not call Connect; it needs admin or worker"
        code, details = await refusal(raw_stream(channel))  # and no credential at all
        assert code is grpc.StatusCode.UNAUTHENTICATED, details
    with secured.client("admin") as admin:
        assert admin.workers() == []


async def test_health_and_reflection_answer_without_a_credential(secured: Secured) -> None:
    async with grpc.aio.insecure_channel(secured.address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        services = [s.name async for response in reflection for s in response.list_services_response.service]
    assert "taskwire.v1.TaskService" in services


def test_refusals_are_audited_with_identity_method_and_target(secured: Secured) -> None:
    with secured.client("admin") as admin:
        execution = admin.submit("echo", {})
    with secured.client("reader") as reader, pytest.raises(PermissionDenied):
        reader.cancel(execution.id)
    with secured.client(token=new_token()) as stranger, pytest.raises(Unauthenticated):
        stranger.get(execution.id)
    with secured.client("admin") as admin:
        admin.cancel(execution.id, reason="audited")
    process = secured.server.process
    process.wait_for_line(
        rf"taskwire.audit: audit action=denied identity=reader method=CancelExecution target={execution.id} "
        r"role=reader code=PERMISSION_DENIED reason=\"role reader may not call CancelExecution"
    )
    process.wait_for_line(
        rf"audit action=denied identity=- method=GetExecution target={execution.id} role=- code=UNAUTHENTICATED"
    )
    process.wait_for_line(rf"audit action=cancel identity=admin method=CancelExecution target={execution.id} code=OK")
    assert bearer_metadata("x")  # the tokens themselves: see test_auth_no_token_in_logs


def test_calls_to_methods_nobody_serves_are_counted_under_one_label(procs: Cluster) -> None:
    """The method's name comes from the caller: counted as `unknown`, callers cannot add label values."""
    secured = start_secured(procs, "--metrics-listen", "127.0.0.1:0")
    url = metrics_url(secured.server.process)
    with grpc.insecure_channel(secured.server.address) as channel:
        for n in range(3):
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                f"/taskwire.v1.TaskService/Made{n}Up"
            )
            with pytest.raises(grpc.RpcError) as refused:
                call(b"", timeout=10, metadata=secured.metadata("admin"))
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED  # no rule: nobody may call it

    def counted() -> bool:
        # The status reaches the caller a moment before the server's interceptor counts it.
        samples = scrape(url)
        return value(samples, "grpc_server_handled_total", grpc_method="unknown", grpc_code="PERMISSION_DENIED") == 3

    wait_for(counted, what="the three calls in the metrics, as unknown")
    assert not [sample for sample in scrape(url) if "Made" in sample.labels.get("grpc_method", "")]
