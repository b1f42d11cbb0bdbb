"""What the server integration tests share: a client over the generated stubs, request builders, status capture.

Everything talks to a real `taskwire-server` process through sync gRPC channels.
Waiting is done on RPC answers, stream events or `tests.harness.wait_for`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import grpc
from google.protobuf import duration_pb2

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from taskwire.v1 import types_pb2 as pb
from tests.harness import ServerProcess, wait_for

FAIL_FAST = tpb.ADMISSION_MODE_FAIL_FAST
WAIT_FOR_ROOM = tpb.ADMISSION_MODE_WAIT_FOR_ROOM
TERMINAL_STATES = frozenset({pb.EXECUTION_STATE_SUCCESS, pb.EXECUTION_STATE_FAILED, pb.EXECUTION_STATE_CANCELLED})
# Deadline of calls that are expected to answer promptly.
RPC_TIMEOUT_S = 10.0


def payload(value: object) -> pb.Payload:
    return pb.Payload(data=json.dumps(value).encode(), content_type="application/json")


def duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(timedelta(seconds=seconds))
    return message


def task(
    handler: str = "echo", task_id: str = "", *, input: object = None, depends_on: Sequence[str] = ()
) -> tpb.TaskSpec:
    spec = tpb.TaskSpec(task_id=task_id, handler=handler, depends_on=list(depends_on))
    if input is not None:
        spec.input.CopyFrom(payload(input))
    return spec


def spec(
    *tasks: tpb.TaskSpec, name: str = "", key: str = "", metadata: dict[str, str] | None = None
) -> tpb.ExecutionSpec:
    """An execution of the given tasks; one `echo` task when none are given."""
    return tpb.ExecutionSpec(name=name, tasks=list(tasks) or [task()], idempotency_key=key, metadata=metadata or {})


def diamond(name: str = "diamond", handler: str = "echo") -> tpb.ExecutionSpec:
    """a → (b, c) → d: four task runs, one of them PENDING and three WAITING(DEPENDENCIES) at first."""
    return spec(
        task(handler, "a", input={"step": "a"}),
        task(handler, "b", input={"step": "b"}, depends_on=["a"]),
        task(handler, "c", input={"step": "c"}, depends_on=["a"]),
        task(handler, "d", input={"step": "d"}, depends_on=["b", "c"]),
        name=name,
    )


def sleeper(seconds: float, *, name: str = "") -> tpb.ExecutionSpec:
    return spec(task("sleep", input={"seconds": seconds}), name=name)


@dataclass(frozen=True)
class Status:
    """The status a failed call ended with."""

    code: grpc.StatusCode
    details: str


def status_of(error: BaseException | None) -> Status:
    assert isinstance(error, grpc.RpcError), f"expected a failed gRPC call, got {error!r}"
    return Status(error.code(), error.details() or "")


def fails(call: Callable[[], object]) -> Status:
    """Run a call that must fail and return its status."""
    try:
        result = call()
    except grpc.RpcError as error:
        return status_of(error)
    raise AssertionError(f"the call succeeded but was expected to fail: {result!r}")


class Client:
    """One channel to a server and the TaskService stub over it."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.insecure_channel(address)
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self.channel)

    @classmethod
    def of(cls, server: ServerProcess) -> Client:
        return cls(server.address)

    def close(self) -> None:
        self.channel.close()

    # ---- Submits --------------------------------------------------------------------------------

    def submit(
        self,
        execution: tpb.ExecutionSpec,
        *,
        admission: tpb.AdmissionMode.ValueType = FAIL_FAST,
        timeout_s: float = RPC_TIMEOUT_S,
    ) -> tpb.SubmitExecutionResponse:
        request = tpb.SubmitExecutionRequest(execution=execution, admission=admission)
        response: tpb.SubmitExecutionResponse = self.tasks.SubmitExecution(request, timeout=timeout_s)
        return response

    def submit_future(
        self,
        execution: tpb.ExecutionSpec,
        *,
        admission: tpb.AdmissionMode.ValueType = FAIL_FAST,
        timeout_s: float = RPC_TIMEOUT_S,
    ) -> grpc.Future[tpb.SubmitExecutionResponse]:
        request = tpb.SubmitExecutionRequest(execution=execution, admission=admission)
        return self.tasks.SubmitExecution.future(request, timeout=timeout_s)

    def submit_batch(
        self,
        executions: Iterable[tpb.ExecutionSpec],
        *,
        admission: tpb.AdmissionMode.ValueType = FAIL_FAST,
        timeout_s: float = RPC_TIMEOUT_S,
    ) -> tpb.SubmitExecutionsResponse:
        request = tpb.SubmitExecutionsRequest(executions=list(executions), admission=admission)
        response: tpb.SubmitExecutionsResponse = self.tasks.SubmitExecutions(request, timeout=timeout_s)
        return response

    def submit_batch_future(
        self,
        executions: Iterable[tpb.ExecutionSpec],
        *,
        admission: tpb.AdmissionMode.ValueType = FAIL_FAST,
        timeout_s: float = RPC_TIMEOUT_S,
    ) -> grpc.Future[tpb.SubmitExecutionsResponse]:
        request = tpb.SubmitExecutionsRequest(executions=list(executions), admission=admission)
        return self.tasks.SubmitExecutions.future(request, timeout=timeout_s)

    # ---- Reads ----------------------------------------------------------------------------------

    def get(self, execution_id: str) -> pb.Execution:
        response: tpb.GetExecutionResponse = self.tasks.GetExecution(
            tpb.GetExecutionRequest(execution_id=execution_id), timeout=RPC_TIMEOUT_S
        )
        return response.execution

    def cancel(self, execution_id: str, reason: str = "") -> tpb.CancelExecutionResponse:
        response: tpb.CancelExecutionResponse = self.tasks.CancelExecution(
            tpb.CancelExecutionRequest(execution_id=execution_id, reason=reason), timeout=RPC_TIMEOUT_S
        )
        return response

    def stats(self) -> tpb.GetStatsResponse:
        response: tpb.GetStatsResponse = self.tasks.GetStats(tpb.GetStatsRequest(), timeout=RPC_TIMEOUT_S)
        return response

    def list_all(self, *, page_size: int = 0) -> list[pb.Execution]:
        """Every stored execution, newest first, following the page tokens."""
        executions: list[pb.Execution] = []
        token = ""
        while True:
            page: tpb.ListExecutionsResponse = self.tasks.ListExecutions(
                tpb.ListExecutionsRequest(page_size=page_size, page_token=token), timeout=RPC_TIMEOUT_S
            )
            executions.extend(page.executions)
            token = page.next_page_token
            if not token:
                return executions

    def stored_ids(self) -> set[str]:
        return {execution.id for execution in self.list_all(page_size=1000)}

    def history(
        self, execution_id: str, *, after_sequence: int = 0, timeout_s: float = 30.0
    ) -> list[pb.ExecutionEvent]:
        """The events a watch delivers until its stream ends (the execution is terminal)."""
        request = tpb.WatchExecutionRequest(execution_id=execution_id, after_sequence=after_sequence)
        return [response.event for response in self.tasks.WatchExecution(request, timeout=timeout_s)]

    def wait_until_terminal(self, execution_id: str, *, timeout_s: float = 30.0) -> pb.Execution:
        """Follow the execution's watch stream to its end and return the execution as stored then."""
        events = self.history(execution_id, timeout_s=timeout_s)
        assert events, f"the watch of {execution_id} ended without an event"
        last = events[-1]
        assert last.WhichOneof("body") == "execution_transition", f"the last event is not terminal: {last}"
        assert last.execution_transition.to_state in TERMINAL_STATES, f"the last event is not terminal: {last}"
        execution = self.get(execution_id)
        assert execution.state in TERMINAL_STATES, f"the watch ended but the execution is {execution}"
        return execution

    def wait_for_stats(
        self, condition: Callable[[tpb.GetStatsResponse], bool], *, what: str, timeout_s: float = 20.0
    ) -> tpb.GetStatsResponse:
        def check() -> tpb.GetStatsResponse | None:
            stats = self.stats()
            return stats if condition(stats) else None

        return wait_for(check, timeout_s=timeout_s, what=what)


def assert_gapless(events: Sequence[pb.ExecutionEvent], *, first: int = 1) -> None:
    """Sequences run first, first + 1, ... with no gap and no repeat."""
    sequences = [event.sequence for event in events]
    assert sequences == list(range(first, first + len(events))), f"sequences are not gapless from {first}: {sequences}"


def serialized(events: Iterable[pb.ExecutionEvent]) -> list[bytes]:
    return [event.SerializeToString(deterministic=True) for event in events]


class Watcher:
    """Follows one watch stream on its own thread, collecting events until the stream ends."""

    def __init__(self, client: Client, execution_id: str, after_sequence: int = 0) -> None:
        self._call = client.tasks.WatchExecution(
            tpb.WatchExecutionRequest(execution_id=execution_id, after_sequence=after_sequence), timeout=60
        )
        self._lock = threading.Lock()
        self._events: list[pb.ExecutionEvent] = []
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{execution_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for response in self._call:
                with self._lock:
                    self._events.append(response.event)
        except grpc.RpcError as error:
            self.error = error
        finally:
            self.ended.set()

    @property
    def events(self) -> list[pb.ExecutionEvent]:
        with self._lock:
            return list(self._events)

    def wait_for_events(self, count: int, *, timeout_s: float = 20.0) -> list[pb.ExecutionEvent]:
        """The first `count` events, once they have arrived."""
        wait_for(lambda: len(self.events) >= count or self.ended.is_set(), timeout_s=timeout_s, what=f"{count} events")
        events = self.events
        assert len(events) >= count, f"the stream ended after {len(events)} events ({self.error})"
        return events[:count]

    def close(self) -> None:
        """Stop following the stream (the server sees the call cancelled)."""
        self._call.cancel()
        self._thread.join(timeout=10)

    def join(self, timeout_s: float = 30.0) -> list[pb.ExecutionEvent]:
        assert self.ended.wait(timeout_s), f"the watch stream did not end; it has {len(self.events)} events"
        self._thread.join(timeout_s)
        assert self.error is None, f"the watch stream failed: {self.error}"
        return self.events
