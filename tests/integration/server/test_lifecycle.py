"""Reflection, health checking, and a graceful shutdown that waits for its workers to hang up (a second
signal stops at once)."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from taskwire.client import Client as SdkClient
from taskwire.client import NotFound
from taskwire.client import State as SdkState
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from taskwire.v1 import worker_service_pb2 as wpb
from taskwire.v1 import worker_service_pb2_grpc
from tests.harness import BOTH_STORES, Cluster, ServerProcess, wait_for
from tests.integration.server.support import Client, fails, sleeper, spec

pytestmark = BOTH_STORES

Connect = Callable[[ServerProcess], Client]
SERVICES = ("taskwire.v1.TaskService", "taskwire.v1.WorkerService", "grpc.health.v1.Health")


class SilentWorker:
    """A worker stream that says hello, takes an invocation, and then says nothing and never hangs up."""

    def __init__(self, address: str) -> None:
        self._stop = threading.Event()
        self.going_away = threading.Event()
        self._channel = grpc.insecure_channel(address)
        hello = wpb.WorkerHello(name="silent", instance_id="silent-1", handlers=["sleep"], slots=1)

        def requests() -> Iterator[wpb.ConnectRequest]:
            yield wpb.ConnectRequest(messages=[wpb.WorkerMessage(hello=hello)])
            self._stop.wait()

        self._call = worker_service_pb2_grpc.WorkerServiceStub(self._channel).Connect(requests())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for frame in self._call:
                if any(message.WhichOneof("kind") == "going_away" for message in frame.messages):
                    self.going_away.set()
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._call.cancel()
        self._channel.close()
        self._reader.join(10)


def reflect(client: Client, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return response


def test_reflection_lists_and_describes_the_services(client: Client) -> None:
    listed = reflect(client, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {service.name for service in listed.list_services_response.service}
    assert set(SERVICES) <= names, names

    # The descriptors are served too, so a reflection client needs no .proto files.
    described = reflect(client, reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICES[0]))
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in described.file_descriptor_response.file_descriptor_proto
    ]
    by_name = {file.name: file for file in files}
    assert "taskwire/v1/task_service.proto" in by_name, list(by_name)
    (service,) = by_name["taskwire/v1/task_service.proto"].service
    # Every method of the service as compiled into the stubs, the new ones included.
    compiled = tpb.DESCRIPTOR.services_by_name["TaskService"].methods
    assert {method.name for method in service.method} == {method.name for method in compiled}
    assert {"SubmitExecution", "WatchExecution", "DeleteExecution", "CreateSchedule"} <= {m.name for m in compiled}


def check(client: Client, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(client.channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    status: int = response.status
    return status


class HealthWatch:
    """Follows Health.Watch on its own thread and hands over each status it reports."""

    def __init__(self, client: Client, service: str = "") -> None:
        self._call = health_pb2_grpc.HealthStub(client.channel).Watch(
            health_pb2.HealthCheckRequest(service=service), timeout=120
        )
        self.statuses: queue.Queue[int] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="health-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for response in self._call:
                self.statuses.put(response.status)
        except grpc.RpcError:
            pass  # the server went away: the statuses seen so far are what counts

    def next_status(self, timeout_s: float = 20.0) -> int:
        return self.statuses.get(timeout=timeout_s)

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(timeout=10)


def test_health_drains_on_sigterm_and_a_second_sigterm_stops_at_once(procs: Cluster, connect: Connect) -> None:
    server = procs.server("--shutdown-grace", "60", "--heartbeat-interval", "0.5", "--lease-timeout", "5")
    client = connect(server)
    for service in ("", *SERVICES[:2]):
        assert check(client, service) == health_pb2.HealthCheckResponse.SERVING, service
    health = HealthWatch(connect(server))
    try:
        assert health.next_status() == health_pb2.HealthCheckResponse.SERVING

        # A worker that does not hang up when told the server is going away keeps the shutdown waiting.
        silent = SilentWorker(server.address)
        running = client.submit(sleeper(60)).execution.id
        wait_for(lambda: client.get(running).state == pb.EXECUTION_STATE_RUNNING, what="the sleep to start")

        server.process.signal(signal.SIGTERM)
        assert health.next_status() == health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", *SERVICES[:2]):
            assert check(client, service) == health_pb2.HealthCheckResponse.NOT_SERVING, service

        # Still draining: reads work, new work is refused with UNAVAILABLE.
        status = fails(lambda: client.submit(spec(name="too late")))
        assert status.code is grpc.StatusCode.UNAVAILABLE, status
        assert "shutting down" in status.details, status.details
        batch_status = fails(lambda: client.submit_batch([spec(name="too late")]))
        assert batch_status.code is grpc.StatusCode.UNAVAILABLE, batch_status
        assert client.get(running).state == pb.EXECUTION_STATE_RUNNING
        assert silent.going_away.wait(10), "the worker was not told the server is going away"
        workers = client.tasks.ListWorkers(tpb.ListWorkersRequest(), timeout=10).workers
        assert [worker.draining for worker in workers] == [False], workers  # not drained: it keeps its task
        assert server.process.popen.poll() is None, "the server stopped without waiting for its worker"

        stopped_at = time.monotonic()
        server.process.signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout_s=20)
        elapsed = time.monotonic() - stopped_at
        assert exit_code == 0, server.process.output
        assert elapsed < 5, f"the second SIGTERM took {elapsed:.1f}s to stop the server"
        assert "taskwire-server stopped" in server.process.output
    finally:
        health.close()
        silent.close()

    # Nothing acknowledged was lost: the interrupted execution is still there after a restart.
    after = connect(procs.server())
    assert after.stored_ids() == {running}


def test_text_with_a_nul_character_is_stored_and_served_as_it_was_sent(procs: Cluster) -> None:
    server = procs.server()
    odd = "a\x00b"
    with SdkClient(server.address) as sdk:
        submitted = sdk.submit(f"sleep{odd}", {"seconds": 30}, name=odd, key=f"key{odd}", metadata={"m": odd})
        cancelled = sdk.cancel(submitted.id, reason=odd)
        again = sdk.submit(f"sleep{odd}", {"seconds": 30}, name=odd, key=f"key{odd}", metadata={"m": odd})
        with pytest.raises(NotFound):
            sdk.get(f"{submitted.id}{odd}")
        stored = sdk.get(submitted.id)
    assert again.id == submitted.id  # the key with a NUL found its execution
    assert (stored.name, stored.execution.metadata, stored.state) == (odd, {"m": odd}, SdkState.CANCELLED)
    assert cancelled.task_runs[0].handler == f"sleep{odd}"
    assert stored.reason is not None
    assert odd in stored.reason.message
    assert server.process.popen.poll() is None, server.process.output
