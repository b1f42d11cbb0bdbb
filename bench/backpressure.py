"""Scenario 4: backpressure of the bounded queue.

Fail-fast under overload: a server with `backpressure_capacity` of queue room and two workers whose
``pause`` tasks (50 ms, 2 slots each) drain about 80 tasks/s. The queue is filled to capacity with
batches, then fail-fast submits are offered at 200/s (open loop) for `backpressure_s` seconds: about
60% should be refused with RESOURCE_EXHAUSTED while the queue stays full. The server's RSS is sampled
every 100 ms meanwhile; it should stay flat, since the queue cannot grow.

Wait-for-room order: a fresh server with no worker and a full queue gets `backpressure_waiters`
wait-for-room submits, each sent only after the server counts the previous one as waiting, so their
arrival order is known; fail-fast submits sent while they wait must all be refused. Then a worker
connects and drains the queue; each waiter's execution records when it was admitted (created_at),
and the admission order must be the arrival order.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import TYPE_CHECKING

import grpc
import grpc.aio

from bench._common import (
    MIB,
    Bench,
    RssSampler,
    Running,
    ScenarioResult,
    channel,
    echo_execution,
    pace,
    task_stub,
    taskwire,
)
from taskwire.v1 import task_service_pb2 as tpb

if TYPE_CHECKING:
    from taskwire.v1.task_service_pb2_grpc import TaskServiceAsyncStub

NAME = "backpressure"
TITLE = "4. Backpressure: a full queue, fail-fast and wait-for-room submitters"
_PAUSE_MS = 50
_SLOTS = 2
_OFFERED_PER_S = 200
_FAIL_FAST_WHILE_WAITING = 10


def _pause(ms: int) -> tpb.ExecutionSpec:
    return echo_execution("pause", json.dumps({"ms": ms}).encode())


async def _fill(stub: TaskServiceAsyncStub, capacity: int, spec: tpb.ExecutionSpec) -> None:
    for start in range(0, capacity, 1000):
        items = min(1000, capacity - start)
        await stub.SubmitExecutions(tpb.SubmitExecutionsRequest(executions=[spec] * items), timeout=60)


async def _overload(address: str, *, capacity: int, seconds: float) -> tuple[int, int, Counter[str], int]:
    """Fill the queue, then offer fail-fast submits for `seconds`.

    Returns (accepted, refused, other failures by status, the queue size at the end).
    """
    spec = _pause(_PAUSE_MS)
    accepted = refused = 0
    other: Counter[str] = Counter()
    async with channel(address) as chan:
        stub = task_stub(chan)
        await _fill(stub, capacity, spec)
        request = tpb.SubmitExecutionRequest(execution=spec, admission=tpb.ADMISSION_MODE_FAIL_FAST)

        async def offer(_: int) -> None:
            nonlocal accepted, refused
            try:
                await stub.SubmitExecution(request, timeout=30)
                accepted += 1
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    refused += 1
                else:
                    other[error.code().name] += 1

        await pace(_OFFERED_PER_S, max(1, round(_OFFERED_PER_S * seconds)), offer)
        stats = await stub.GetStats(tpb.GetStatsRequest(), timeout=10)
    return accepted, refused, other, stats.queue.size


async def _wait_for_room(running: Running, *, capacity: int, waiters: int) -> tuple[list[int], int]:
    """Returns the waiters' indices in the order the server admitted them, and how many of the
    fail-fast submits sent while they waited were refused.
    """
    async with channel(running.address) as chan:
        stub = task_stub(chan)
        await _fill(stub, capacity, _pause(5))
        calls: list[asyncio.Future[tpb.SubmitExecutionResponse]] = []
        for index in range(waiters):
            request = tpb.SubmitExecutionRequest(
                execution=echo_execution("echo", metadata={"waiter": str(index)}),
                admission=tpb.ADMISSION_MODE_WAIT_FOR_ROOM,
            )
            calls.append(asyncio.ensure_future(stub.SubmitExecution(request, timeout=300)))
            while True:  # the next waiter goes only once this one is counted as waiting
                stats = await stub.GetStats(tpb.GetStatsRequest(), timeout=10)
                if stats.queue.waiting_submitters > index:
                    break
                await asyncio.sleep(0.002)
        refused = 0
        fail_fast = tpb.SubmitExecutionRequest(execution=_pause(5), admission=tpb.ADMISSION_MODE_FAIL_FAST)
        for _ in range(_FAIL_FAST_WHILE_WAITING):
            try:
                await stub.SubmitExecution(fail_fast, timeout=10)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                refused += 1
        await asyncio.to_thread(running.add_worker, slots=8)
        responses = await asyncio.gather(*calls)
    admitted = sorted(responses, key=lambda r: (r.execution.created_at.seconds, r.execution.created_at.nanos))
    return [int(r.execution.metadata["waiter"]) for r in admitted], refused


def _inversions(order: list[int]) -> int:
    return sum(1 for i, a in enumerate(order) for b in order[i + 1 :] if a > b)


def run(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    capacity = sizes.backpressure_capacity
    result = ScenarioResult(name=NAME, title=TITLE)
    result.params = {
        "capacity": capacity,
        "offered_per_s": _OFFERED_PER_S,
        "seconds": sizes.backpressure_s,
        "drain": f"{sizes.workers} workers × {_SLOTS} slots × pause {_PAUSE_MS} ms",
        "waiters": sizes.backpressure_waiters,
    }
    for number in range(1, bench.runs + 1):
        bench.log(f"{NAME} run {number}/{bench.runs}: fail-fast at {_OFFERED_PER_S}/s into a full queue")
        server_args = ("--queue-capacity", str(capacity))
        with (
            taskwire(bench, workers=sizes.workers, slots=_SLOTS, server_args=server_args) as running,
            RssSampler(running.server_pid) as rss,
        ):
            accepted, refused, other, left = asyncio.run(
                _overload(running.address, capacity=capacity, seconds=sizes.backpressure_s)
            )
        offered = accepted + refused + sum(other.values())
        result.add("refused_pct", "fail-fast: refused (RESOURCE_EXHAUSTED)", "%", 100 * refused / offered)
        result.add("accepted_per_s", "fail-fast: accepted while full", "tasks/s", accepted / sizes.backpressure_s)
        result.add("queue_left", "fail-fast: queue size at the end", "tasks", float(left))
        values = [sample for _, sample in rss.samples]
        # The first second is the fill; "flat" is judged on the overload after it.
        steady = [sample for at, sample in rss.samples if at >= rss.samples[0][0] + 1.0] or values
        result.add("rss_start", "server RSS as the overload starts", "MiB", steady[0] / MIB)
        result.add("rss_max", "server RSS, max during the overload", "MiB", max(steady) / MIB)
        result.add("rss_growth", "server RSS growth during the overload", "MiB", (steady[-1] - steady[0]) / MIB)
        if other:
            result.notes.append(f"run {number}: other failures {dict(other)}")
        bench.log(f"{NAME} run {number}/{bench.runs}: {sizes.backpressure_waiters} wait-for-room submitters")
        with taskwire(bench, workers=0, server_args=("--queue-capacity", str(min(capacity, 50)))) as running:
            order, refused_while_waiting = asyncio.run(
                _wait_for_room(running, capacity=min(capacity, 50), waiters=sizes.backpressure_waiters)
            )
        in_place = sum(1 for position, index in enumerate(order) if position == index)
        result.add("waiters_in_order", "wait-for-room: admitted in arrival order", "%", 100 * in_place / len(order))
        result.add("waiter_inversions", "wait-for-room: out-of-order pairs", "pairs", float(_inversions(order)))
        result.add(
            "refused_while_waiting",
            f"fail-fast refused while others wait (of {_FAIL_FAST_WHILE_WAITING})",
            "calls",
            float(refused_while_waiting),
        )
    result.notes.append(
        f"offered {_OFFERED_PER_S}/s fail-fast against ~{sizes.workers * _SLOTS * 1000 // _PAUSE_MS}/s of worker "
        "capacity: about 60% refused is the expected share"
    )
    return result


__all__ = ["NAME", "TITLE", "run"]
