"""gRPC clients for the scenarios: channels and stubs, the SDK's client, the echo execution, and waiting on
the server's queue and store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from bench.handlers import monotonic_s
from taskwire.client import AsyncClient
from taskwire.common import Payload
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from taskwire.v1 import types_pb2 as pb

if TYPE_CHECKING:
    from taskwire.v1.task_service_pb2_grpc import TaskServiceAsyncStub

JSON = "application/json"
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def channel(address: str, *options: tuple[str, Any]) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=[*CHANNEL_OPTIONS, *options])


def task_stub(chan: grpc.aio.Channel) -> TaskServiceAsyncStub:
    return task_service_pb2_grpc.TaskServiceStub(chan)


def echo_execution(
    handler: str = "echo", input_json: bytes = b"null", *, metadata: Mapping[str, str] | None = None
) -> tpb.ExecutionSpec:
    return tpb.ExecutionSpec(
        tasks=[tpb.TaskSpec(handler=handler, input=pb.Payload(data=input_json, content_type=JSON))],
        metadata=dict(metadata or {}),
    )


def echo_input(input_json: bytes = b"null") -> Payload:
    """The task input `echo_execution` carries, for the SDK's `submit` (which sends a `Payload` as given)."""
    return Payload(data=input_json, content_type=JSON)


def sdk_client(address: str) -> AsyncClient:
    """The SDK's asyncio client, as a user submits through it, with the 60 s deadline of the stub calls here."""
    return AsyncClient(address, timeout=timedelta(seconds=60))


_ACTIVE = (pb.EXECUTION_STATE_PENDING, pb.EXECUTION_STATE_RUNNING, pb.EXECUTION_STATE_WAITING)
_UNSUCCESSFUL = (pb.EXECUTION_STATE_FAILED, pb.EXECUTION_STATE_CANCELLED)


async def _any_in(stub: TaskServiceAsyncStub, states: Sequence[pb.ExecutionState.ValueType]) -> int:
    page = await stub.ListExecutions(tpb.ListExecutionsRequest(states=states, page_size=1), timeout=30)
    return len(page.executions)


async def active_count(stub: TaskServiceAsyncStub) -> int:
    """0 when the store holds no execution that is still PENDING, RUNNING or WAITING, else 1."""
    return await _any_in(stub, _ACTIVE)


async def unsuccessful_count(stub: TaskServiceAsyncStub) -> int:
    """0 when the store holds no FAILED or CANCELLED execution, else 1."""
    return await _any_in(stub, _UNSUCCESSFUL)


async def describe_unsuccessful(stub: TaskServiceAsyncStub, *, limit: int = 3) -> str:
    """What went wrong with the first few FAILED or CANCELLED executions, for an error message."""
    page = await stub.ListExecutions(tpb.ListExecutionsRequest(states=_UNSUCCESSFUL, page_size=limit), timeout=30)
    lines = []
    for execution in page.executions:
        for task_run in execution.task_runs:
            attempts = "; ".join(
                f"attempt {a.number} {pb.AttemptOutcome.Name(a.outcome)} {a.error.type}: {a.error.message}"
                for a in task_run.attempts
            )
            lines.append(
                f"{execution.id} {pb.ReasonCode.Name(task_run.reason_code)} {task_run.reason_message!r} [{attempts}]"
            )
    return "\n".join(lines)


async def wait_drained(stub: TaskServiceAsyncStub, *, poll_s: float = 0.01, timeout_s: float = 600) -> float:
    """Wait until every accepted task has completed, durably; return the monotonic time that was seen.

    GetStats (memory only, cheap) is polled until nothing is queued or running; then ListExecutions,
    which reads committed rows only, confirms that no execution is still active.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await stub.GetStats(tpb.GetStatsRequest(), timeout=30)
        if stats.queue.size == 0 and stats.in_flight == 0 and not await active_count(stub):
            return monotonic_s()
        if time.monotonic() > deadline:
            raise TimeoutError(f"tasks still active after {timeout_s}s: {stats}")
        await asyncio.sleep(poll_s)


async def pace(rate: float, count: int, action: Callable[[int], Coroutine[Any, Any, None]]) -> list[float]:
    """Start `action(i)` at `rate` per second (open loop: a slow action never delays the next start).

    Returns how late each start was against its schedule, in seconds.
    """
    running: list[asyncio.Task[None]] = []
    lags: list[float] = []
    start = monotonic_s() + 0.01
    for index in range(count):
        due = start + index / rate
        delay = due - monotonic_s()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, monotonic_s() - due))
        running.append(asyncio.create_task(action(index)))
    await asyncio.gather(*running)
    return lags
