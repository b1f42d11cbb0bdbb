"""Scenario 2: dispatch latency at a paced submit rate (open loop), as a client sees it.

Submits go through the SDK, as users send them: one `taskwire.client.AsyncClient`, and for each task the
client takes t0 on the host's monotonic clock just before ``await client.submit(...)``, then watches the
execution (WatchExecution, through the generated stub on a channel of its own) until its terminal event:

- submit → handler start: the ``noop_timed`` handler (bench/handlers.py) returns the monotonic time at
  which it started; collected afterwards with ListExecutions, so collecting costs nothing in the
  measured path;
- submit → durable acknowledgement: when ``client.submit()`` returns (the execution is fsynced by then),
  beside the bare unary round trip and the bare stream round trip (one message at a time on one open
  stream) at the same pace;
- submit → completion seen by the client: when the watch delivers the SUCCESS event (or at once, if
  the submit's own answer already shows the execution finished).

Submits start on schedule whatever earlier ones are doing (no coordinated omission from the pacer);
how late the pacer itself was is reported, so a client that could not keep up is visible.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import grpc.aio

from bench import baseline
from bench._common import (
    Bench,
    ScenarioResult,
    channel,
    echo_input,
    monotonic_s,
    pace,
    percentile,
    sdk_client,
    task_stub,
    taskwire,
    wait_drained,
)
from taskwire.common import TaskwireError
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb

if TYPE_CHECKING:
    from taskwire.v1.task_service_pb2_grpc import TaskServiceAsyncStub

NAME = "latency"
TITLE = "2. Dispatch latency, paced submits (client's view, host monotonic clock)"
_TERMINAL = (pb.EXECUTION_STATE_SUCCESS, pb.EXECUTION_STATE_FAILED, pb.EXECUTION_STATE_CANCELLED)
_WARMUP = 20


@dataclass(slots=True)
class _Sample:
    sent_s: float
    answered_s: float = 0.0
    done_s: float = 0.0
    execution_id: str = ""
    started_s: float = 0.0


async def _paced(address: str, *, rate: int, seconds: float) -> tuple[list[_Sample], list[float], Counter[str]]:
    """Returns the samples of the calls that succeeded, the pacer's lateness, and failures by kind
    (gRPC status names, and watches that ended early).
    """
    timed = echo_input()
    samples: list[_Sample] = []
    failures: Counter[str] = Counter()
    # Watching every execution would double the work asked of the server at high rates; beyond
    # 100/s, every k-th execution is watched so that watches stay at about 100 per second.
    watch_every = max(1, rate // 100)
    async with sdk_client(address) as client, channel(address) as chan:
        stub = task_stub(chan)

        async def one(index: int) -> None:
            sample = _Sample(sent_s=monotonic_s())
            try:
                execution = await client.submit("noop_timed", timed)
                sample.answered_s = monotonic_s()
                sample.execution_id = execution.id
                if execution.is_terminal:
                    sample.done_s = sample.answered_s
                elif index % watch_every == 0:
                    await _watch(stub, sample, failures)
            except TaskwireError as error:
                failures[error.status_name] += 1
                if not sample.execution_id:
                    return
            except grpc.aio.AioRpcError as error:
                failures[error.code().name] += 1
            samples.append(sample)

        for index in range(_WARMUP):
            await one(index)
        samples.clear()
        lags = await pace(rate, max(1, round(rate * seconds)), one)
        await wait_drained(stub)  # the unwatched ones too: every output is in the store
        await _collect_starts(stub, samples)
    return samples, lags, failures


async def _watch(stub: TaskServiceAsyncStub, sample: _Sample, failures: Counter[str]) -> None:
    """Follow one execution until its terminal event; `sample.done_s` is when the client saw it."""
    watch = stub.WatchExecution(tpb.WatchExecutionRequest(execution_id=sample.execution_id), timeout=60)
    async for message in watch:
        event = message.event
        if event.HasField("execution_transition") and event.execution_transition.to_state in _TERMINAL:
            sample.done_s = monotonic_s()
    if not sample.done_s:
        # The stream ended without its terminal event (a server race: the execution retired between the
        # watch's store catch-up and its live phase). A client then has to ask; that answer is when it
        # sees the completion.
        failures["watch ended without its terminal event"] += 1
        got = await stub.GetExecution(tpb.GetExecutionRequest(execution_id=sample.execution_id))
        if got.execution.state in _TERMINAL:
            sample.done_s = monotonic_s()


async def _collect_starts(stub: TaskServiceAsyncStub, samples: list[_Sample]) -> None:
    wanted = {sample.execution_id: sample for sample in samples}
    token = ""
    while wanted:
        page = await stub.ListExecutions(tpb.ListExecutionsRequest(page_size=1000, page_token=token), timeout=60)
        for execution in page.executions:
            sample = wanted.pop(execution.id, None)
            if sample is None:
                continue
            attempt = execution.task_runs[0].attempts[-1]
            sample.started_s = float(json.loads(attempt.output.data)["started_s"])
        token = page.next_page_token
        if not token:
            break
    if wanted:
        raise RuntimeError(f"{len(wanted)} executions not found in the listing")


def _record(
    result: ScenarioResult, rate: int, samples: list[_Sample], lags: list[float], failures: Counter[str]
) -> None:
    at = f"at {rate}/s"
    to_start = [1000 * (s.started_s - s.sent_s) for s in samples]
    to_done = [1000 * (s.done_s - s.sent_s) for s in samples if s.done_s]
    submit_call = [1000 * (s.answered_s - s.sent_s) for s in samples]
    for q in (50, 99):
        result.add(f"{rate}.start_p{q}", f"{at}: submit → handler start p{q}", "ms", percentile(to_start, q))
    result.add(f"{rate}.start_max", f"{at}: submit → handler start max", "ms", max(to_start))
    for q in (50, 99):
        result.add(f"{rate}.done_p{q}", f"{at}: submit → completion seen p{q}", "ms", percentile(to_done, q))
    result.add(f"{rate}.done_max", f"{at}: submit → completion seen max", "ms", max(to_done))
    for q in (50, 99):
        result.add(
            f"{rate}.submit_p{q}",
            f"{at}: durable acknowledgement (SDK submit returns) p{q}",
            "ms",
            percentile(submit_call, q),
        )
    early = sum(1 for s in samples if s.started_s < s.answered_s)
    result.add(
        f"{rate}.started_before_answer",
        f"{at}: handler started before the submit call returned",
        "%",
        100 * early / len(samples),
    )
    span = max(s.sent_s for s in samples) - min(s.sent_s for s in samples)
    achieved = (len(samples) - 1) / span if span > 0 else float(len(samples))
    result.add(f"{rate}.achieved", f"{at}: submits started per second", "tasks/s", achieved)
    result.add(f"{rate}.lag_p99", f"{at}: pacer lateness p99", "ms", 1000 * percentile(lags, 99))
    failed = sum(n for kind, n in failures.items() if kind.isupper())
    result.add(f"{rate}.failed", f"{at}: calls failed", "calls", float(failed))
    result.add(f"{rate}.watched", f"{at}: completions seen", "tasks", float(len(to_done)))


def run(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    result = ScenarioResult(name=NAME, title=TITLE)
    result.params = {
        "rates": [{"per_s": rate, "seconds": seconds} for rate, seconds in sizes.latency],
        "workers": sizes.workers,
        "slots_per_worker": sizes.worker_slots,
    }
    seen: Counter[str] = Counter()
    for number in range(1, bench.runs + 1):
        rate, seconds = sizes.latency[0]
        bench.log(f"{NAME} run {number}/{bench.runs}: bare unary and stream round trips at {rate}/s")
        paced = max(1, round(rate * seconds))
        with baseline.baseline_server() as address:
            trips = asyncio.run(baseline.unary_round_trips(address, rate=rate, count=paced))
            stream_trips = asyncio.run(baseline.stream_round_trips(address, rate=rate, count=paced))
        bare = (
            (f"bare.{rate}", f"bare grpc.aio unary round trip at {rate}/s", "", trips),
            (
                f"bare.stream.{rate}",
                f"bare stream round trip at {rate}/s",
                " (grpc.aio, one message at a time on one open stream)",
                stream_trips,
            ),
        )
        for key, label, note, times in bare:
            for q in (50, 99):
                result.add(f"{key}.p{q}", f"{label} p{q}{note}", "ms", 1000 * percentile(times, q))
        with taskwire(bench, workers=sizes.workers, slots=sizes.worker_slots) as running:
            for rate, seconds in sizes.latency:
                bench.log(f"{NAME} run {number}/{bench.runs}: {rate}/s for {seconds:g}s")
                samples, lags, failures = asyncio.run(_paced(running.address, rate=rate, seconds=seconds))
                _record(result, rate, samples, lags, failures)
                if failures:
                    result.notes.append(f"run {number}, at {rate}/s: {dict(failures)}")
                seen.update(failures)
    result.notes.append(
        "submits through the SDK: one taskwire.client.AsyncClient, t0 just before await client.submit(), the "
        "durable acknowledgement when it returns; watches through the generated stub on a channel of its own"
    )
    result.notes.append(
        "submit → handler start crosses gRPC twice (client → server, server → worker stream), as the bare "
        "round trip does (there and back); the bare figure is the transport alone, paced the same way"
    )
    result.notes.append(
        "handler start is taken inside the handler (noop_timed); completion when the client's watch delivers it, "
        "or when the submit's own answer already shows it; above 100/s every (rate/100)-th execution is watched"
    )
    if seen["CANCELLED"]:
        result.notes.append(
            "CANCELLED calls came from the gRPC layer while the offered rate exceeded what the server "
            "accepted; taskwire itself reported no error for them"
        )
    if seen["watch ended without its terminal event"]:
        result.notes.append(
            "some watches ended without their SUCCESS event (a race in WatchExecution between the store "
            "catch-up and the live subscription when the execution retires in between); those completions "
            "were read with GetExecution"
        )
    return result


__all__ = ["NAME", "TITLE", "run"]
