"""Scenario 1: throughput of no-op (``echo``) tasks, end to end, beside the bare gRPC limit.

Each run, in this order (so that every taskwire figure has a bare figure taken moments before it):

1. bare unary echo, `submit_callers` concurrent callers on one channel;
2. bare multiplexed echo: the same number of callers, each sending one spec and awaiting its own answer,
   all over one bidirectional stream whose writer coalesces the specs pending at once into one frame;
3. taskwire, one submit per task through the SDK, as users submit: one `AsyncClient` shared by the same
   number of concurrent callers, each awaiting ``client.submit("echo", ...)`` (its durable acknowledgement)
   before its next; the headline "one submit per task", held to the targets;
4. taskwire, one SubmitExecution call per task through the generated stub (unary), the same callers;
5. bare bidirectional stream round trips, one stream per worker, `worker_slots` messages in flight each;
6. taskwire, SubmitExecutions in batches of `batch_size`, `batches_in_flight` calls at once;
7. the same batches, every result collected with WaitExecutions: after each batch is accepted its caller
   opens one WaitExecutions for the batch's executions and goes on submitting; the end is when the last
   result has arrived. Its rate is printed beside the batched end-to-end rate of the same run, as a ratio.
8. the same batches for ``echo_sync``, the same echo as a plain function (run in the worker's handler
   threads rather than on its handler loop), as the peers' tasks are written.
9. the same batches for ``echo_sync`` with ``--isolation process``: each worker runs its attempts in
   `PROCESS_SLOTS` kept child processes, as Celery's prefork pool runs its tasks. The workers' CPU counts
   their children's.

taskwire runs a fresh server (SQLite, durable as shipped) and `workers` taskwire-worker processes with
`worker_slots` slots each, for each of 3, 4, 6, 7 and 8. Its rate is tasks / (last completion − first submit):
the end is when GetStats shows nothing queued or running *and* the store (ListExecutions reads only
committed rows) holds no active execution, so every completion counted is durable.
"""

from __future__ import annotations

import asyncio
import os
from itertools import count
from typing import TYPE_CHECKING

from bench import baseline
from bench._common import (
    Bench,
    Running,
    ScenarioResult,
    channel,
    cpu_seconds,
    describe_unsuccessful,
    echo_execution,
    echo_input,
    monotonic_s,
    sdk_client,
    task_stub,
    taskwire,
    unsuccessful_count,
    wait_drained,
)
from bench.peer_driver import tree_cpu_s
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb

if TYPE_CHECKING:
    from taskwire.v1.task_service_pb2_grpc import TaskServiceAsyncStub

NAME = "throughput"
TITLE = "1. Throughput, no-op tasks (echo), end to end"
#: Slots, so child processes, of each worker in the process isolation phase.
PROCESS_SLOTS = 4


async def _warm_up(stub: TaskServiceAsyncStub) -> None:
    """One task end to end before the clock starts: connections up, workers' first dispatch done."""
    await stub.SubmitExecution(tpb.SubmitExecutionRequest(execution=echo_execution()), timeout=30)
    await wait_drained(stub)


async def _drained_successfully(stub: TaskServiceAsyncStub) -> float:
    done = await wait_drained(stub)
    if await unsuccessful_count(stub):
        raise RuntimeError(f"some echo tasks did not succeed:\n{await describe_unsuccessful(stub)}")
    return done


async def single_end_to_end(address: str, *, tasks: int, callers: int) -> tuple[float, float, float]:
    """One submit per task through the SDK: one `AsyncClient` shared by `callers` concurrent callers.

    (first submit, last submit answered, last completion), monotonic seconds.
    """
    numbers = count()
    echo = echo_input()
    async with sdk_client(address) as client, channel(address) as chan:
        stub = task_stub(chan)
        await client.submit("echo", echo)  # warm up: the client's connection, the workers' first dispatch
        await wait_drained(stub)

        async def caller() -> None:
            while next(numbers) < tasks:
                await client.submit("echo", echo)

        first = monotonic_s()
        await asyncio.gather(*(caller() for _ in range(callers)))
        submitted = monotonic_s()
        done = await _drained_successfully(stub)
    return first, submitted, done


async def unary_end_to_end(address: str, *, tasks: int, callers: int) -> tuple[float, float, float]:
    """One SubmitExecution call per task through the generated stub (unary), from `callers` concurrent callers.

    (first submit, last submit answered, last completion), monotonic seconds.
    """
    request = tpb.SubmitExecutionRequest(execution=echo_execution())
    numbers = count()
    async with channel(address) as chan:
        stub = task_stub(chan)
        await _warm_up(stub)

        async def caller() -> None:
            while next(numbers) < tasks:
                await stub.SubmitExecution(request, timeout=60)

        first = monotonic_s()
        await asyncio.gather(*(caller() for _ in range(callers)))
        submitted = monotonic_s()
        done = await _drained_successfully(stub)
    return first, submitted, done


async def batched_end_to_end(
    address: str, *, tasks: int, batch_size: int, in_flight: int, handler: str = "echo"
) -> tuple[float, float, float]:
    # Waiting for room when the bounded queue is full, as a producer faster than its workers should.
    request = tpb.SubmitExecutionsRequest(
        executions=[echo_execution(handler)] * batch_size, admission=tpb.ADMISSION_MODE_WAIT_FOR_ROOM
    )
    batches = count()
    total_batches = -(-tasks // batch_size)
    async with channel(address) as chan:
        stub = task_stub(chan)
        await _warm_up(stub)

        async def caller() -> None:
            while next(batches) < total_batches:
                response = await stub.SubmitExecutions(request, timeout=60)
                failed = [r for r in response.results if r.error_code]
                if failed:
                    raise RuntimeError(f"batch items refused: {failed[0].error_code}: {failed[0].error_message}")

        first = monotonic_s()
        await asyncio.gather(*(caller() for _ in range(in_flight)))
        submitted = monotonic_s()
        done = await _drained_successfully(stub)
    return first, submitted, done


async def batched_collected(address: str, *, tasks: int, batch_size: int, in_flight: int) -> tuple[float, float, float]:
    """As `batched_end_to_end`, but every result is collected with WaitExecutions, one stream per batch
    opened as soon as the batch is accepted; the end is when the last result arrived."""
    # Waiting for room when the bounded queue is full, as a producer faster than its workers should.
    request = tpb.SubmitExecutionsRequest(
        executions=[echo_execution()] * batch_size, admission=tpb.ADMISSION_MODE_WAIT_FOR_ROOM
    )
    batches = count()
    total_batches = -(-tasks // batch_size)
    collected = 0
    async with channel(address) as chan:
        stub = task_stub(chan)
        await _warm_up(stub)
        waits: list[asyncio.Task[None]] = []

        async def collect(execution_ids: list[str]) -> None:
            nonlocal collected
            call = stub.WaitExecutions(tpb.WaitExecutionsRequest(execution_ids=execution_ids), timeout=600)
            async for response in call:
                for execution in response.executions:
                    if execution.state != pb.EXECUTION_STATE_SUCCESS:
                        raise RuntimeError(f"an echo task did not succeed: {execution}")
                collected += len(response.executions)

        async def caller() -> None:
            while next(batches) < total_batches:
                response = await stub.SubmitExecutions(request, timeout=60)
                failed = [r for r in response.results if r.error_code]
                if failed:
                    raise RuntimeError(f"batch items refused: {failed[0].error_code}: {failed[0].error_message}")
                waits.append(asyncio.create_task(collect([r.execution_id for r in response.results])))

        first = monotonic_s()
        await asyncio.gather(*(caller() for _ in range(in_flight)))
        submitted = monotonic_s()
        await asyncio.gather(*waits)
        done = monotonic_s()
    if collected != total_batches * batch_size:
        raise RuntimeError(f"collected {collected} results of {total_batches * batch_size}")
    return first, submitted, done


def batched_rate(bench: Bench) -> float:
    """Tasks/s end to end of this scenario's batches on a fresh server with the usual workers: the reference
    another scenario measures beside its own figure."""
    sizes = bench.sizes
    with taskwire(bench, workers=sizes.workers, slots=sizes.worker_slots) as running:
        first, _, done = asyncio.run(
            batched_end_to_end(
                running.address,
                tasks=sizes.tasks_batched,
                batch_size=sizes.batch_size,
                in_flight=sizes.batches_in_flight,
            )
        )
    return sizes.tasks_batched / (done - first)


def _measure(bench: Bench, result: ScenarioResult, way: str, running: Running, tasks: int) -> None:
    sizes = bench.sizes
    server, workers = running.server_pids, running.worker_pids
    cpu_before, workers_before, own_before = cpu_seconds(server), tree_cpu_s(workers), cpu_seconds([os.getpid()])
    if way in ("single", "unary"):
        one_each = single_end_to_end if way == "single" else unary_end_to_end
        first, submitted, done = asyncio.run(one_each(running.address, tasks=tasks, callers=sizes.submit_callers))
    elif way == "collected":
        first, submitted, done = asyncio.run(
            batched_collected(
                running.address, tasks=tasks, batch_size=sizes.batch_size, in_flight=sizes.batches_in_flight
            )
        )
    else:
        first, submitted, done = asyncio.run(
            batched_end_to_end(
                running.address,
                tasks=tasks,
                batch_size=sizes.batch_size,
                in_flight=sizes.batches_in_flight,
                handler="echo_sync" if way in ("sync", "process") else "echo",
            )
        )
    wall = done - first
    server_cpu_s = cpu_seconds(server) - cpu_before
    label = {
        "single": "one submit per task",
        "unary": "one SubmitExecution call per task (generated stub, unary)",
        "batched": f"batches of {sizes.batch_size}",
        "collected": f"batches of {sizes.batch_size}, every result collected (WaitExecutions)",
        "sync": f"batches of {sizes.batch_size}, a plain-function handler",
        "process": f"batches of {sizes.batch_size}, a plain-function handler, process isolation",
    }[way]
    result.add(f"{way}.tasks_per_s", f"taskwire, {label}: end to end", "tasks/s", tasks / wall)
    result.add(f"{way}.submit_per_s", f"taskwire, {label}: submits accepted", "tasks/s", tasks / (submitted - first))
    result.add(
        f"{way}.server_cpu",
        f"taskwire, {label}: server CPU, store writer included (100 = one core)",
        "%",
        100 * server_cpu_s / wall,
    )
    result.add(
        f"{way}.server_cpu_per_task",
        f"taskwire, {label}: server CPU per task, store writer included",
        "µs",
        1e6 * server_cpu_s / tasks,
    )
    result.add(
        f"{way}.workers_cpu",
        f"taskwire, {label}: taskwire-worker processes' CPU",
        "%",
        100 * (tree_cpu_s(workers) - workers_before) / wall,
    )
    result.add(
        f"{way}.client_cpu",
        f"taskwire, {label}: benchmark client CPU",
        "%",
        100 * (cpu_seconds([os.getpid()]) - own_before) / wall,
    )


def run(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    result = ScenarioResult(name=NAME, title=TITLE)
    result.params = {
        "tasks_single": sizes.tasks_single,
        "tasks_batched": sizes.tasks_batched,
        "callers": sizes.submit_callers,
        "batch_size": sizes.batch_size,
        "batches_in_flight": sizes.batches_in_flight,
        "workers": sizes.workers,
        "slots_per_worker": sizes.worker_slots,
        "baseline_s": sizes.baseline_s,
    }
    with baseline.baseline_server() as bare:
        for number in range(1, bench.runs + 1):
            bench.log(f"{NAME} run {number}/{bench.runs}: bare unary echo, {sizes.submit_callers} callers")
            qps = asyncio.run(baseline.unary_qps(bare, callers=sizes.submit_callers, duration_s=sizes.baseline_s))
            result.add("bare.unary_qps", f"bare grpc.aio unary echo, {sizes.submit_callers} callers", "calls/s", qps)
            bench.log(f"{NAME} run {number}/{bench.runs}: bare multiplexed echo, {sizes.submit_callers} callers")
            qps = asyncio.run(baseline.mux_qps(bare, callers=sizes.submit_callers, duration_s=sizes.baseline_s))
            result.add(
                "bare.mux_qps",
                f"bare grpc.aio, {sizes.submit_callers} callers multiplexed on one stream",
                "calls/s",
                qps,
            )
            bench.log(f"{NAME} run {number}/{bench.runs}: taskwire, one submit per task ({sizes.tasks_single:,} tasks)")
            with taskwire(bench, workers=sizes.workers, slots=sizes.worker_slots) as running:
                _measure(bench, result, "single", running, sizes.tasks_single)
            bench.log(f"{NAME} run {number}/{bench.runs}: taskwire, one unary SubmitExecution call per task")
            with taskwire(bench, workers=sizes.workers, slots=sizes.worker_slots) as running:
                _measure(bench, result, "unary", running, sizes.tasks_single)
            bench.log(f"{NAME} run {number}/{bench.runs}: bare stream round trips")
            rate = asyncio.run(
                baseline.stream_rate(
                    bare, streams=sizes.workers, window=sizes.worker_slots, duration_s=sizes.baseline_s
                )
            )
            result.add(
                "bare.stream_msgs_per_s",
                f"bare grpc.aio bidi stream, {sizes.workers} streams × window {sizes.worker_slots}",
                "msgs/s",
                rate,
            )
            bench.log(f"{NAME} run {number}/{bench.runs}: taskwire, batched ({sizes.tasks_batched:,} tasks)")
            with taskwire(bench, workers=sizes.workers, slots=sizes.worker_slots) as running:
                _measure(bench, result, "batched", running, sizes.tasks_batched)
            bench.log(f"{NAME} run {number}/{bench.runs}: taskwire, batched, results collected")
            with taskwire(bench, workers=sizes.workers, slots=sizes.worker_slots) as running:
                _measure(bench, result, "collected", running, sizes.tasks_batched)
            metrics = result.metrics
            result.add(
                "collected.vs_batched",
                "results collected (WaitExecutions) vs batched end to end, tasks/s",
                "×",
                metrics["collected.tasks_per_s"].values[-1] / metrics["batched.tasks_per_s"].values[-1],
            )
            bench.log(f"{NAME} run {number}/{bench.runs}: taskwire, batched, a plain-function handler")
            with taskwire(bench, workers=sizes.workers, slots=sizes.worker_slots) as running:
                _measure(bench, result, "sync", running, sizes.tasks_batched)
            bench.log(f"{NAME} run {number}/{bench.runs}: taskwire, batched, process isolation")
            with taskwire(
                bench, workers=sizes.workers, slots=PROCESS_SLOTS, worker_args=("--isolation", "process")
            ) as running:
                _measure(bench, result, "process", running, sizes.tasks_batched)
    result.notes.append(
        f"one submit per task: one taskwire.client.AsyncClient shared by {sizes.submit_callers} concurrent callers, "
        "each awaiting client.submit() (its durable acknowledgement) before its next; the unary row sends the same "
        "spec as SubmitExecution calls through the generated stub on one channel, from as many callers"
    )
    result.notes.append(
        f"{sizes.tasks_single:,} (one submit each, each way) and {sizes.tasks_batched:,} (batched) echo tasks per run; "
        f"{sizes.workers} taskwire-worker processes × {sizes.worker_slots} slots; "
        "rate = tasks / (last durable completion − first submit); collected: tasks / (last result received by "
        "the client − first submit)"
    )
    result.notes.append(
        f"process isolation: {sizes.workers} taskwire-worker processes × {PROCESS_SLOTS} slots, each attempt in one "
        "of the worker's kept child processes; the workers' CPU includes their children's"
    )
    return result


__all__ = [
    "NAME",
    "TITLE",
    "batched_collected",
    "batched_end_to_end",
    "batched_rate",
    "run",
    "single_end_to_end",
    "unary_end_to_end",
]
