"""Scenario 3: cancel latency of a running task, idle and under background load.

One task at a time runs ``abort_timed`` (bench/handlers.py): it reports progress once, then awaits its
abort signal and writes the monotonic time the signal woke it to a file in a scratch directory. The
client watches the execution; once the progress event shows the handler is running it takes t0 and
calls CancelExecution, then reads on until the watch delivers CANCELLED. Reported:

- cancel → abort signal: the handler's wake-up time − t0;
- cancel → CANCELLED seen by the watcher: the watch's delivery time − t0.

Under load, a separate process (bench/loadgen.py) submits echo tasks at `cancel_load_rate` per second
(in SubmitExecutions calls of 10) to the same server and workers for the whole measurement.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bench._common import (
    Bench,
    ScenarioResult,
    channel,
    echo_execution,
    monotonic_s,
    percentile,
    spawn_module,
    task_stub,
    taskwire,
    wait_for,
)
from bench.loadgen import READY, SUMMARY
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb

NAME = "cancel"
TITLE = "3. Cancel latency of a running task"
_WARMUP = 2
# The background load arrives in SubmitExecutions calls of 10: 500 tasks/s is 50 calls/s, a load the
# server sustains, where 500 single calls/s can exceed what one server process accepts on 2 busy cores.
_LOAD_BATCH = 10
_CANCELLED = pb.EXECUTION_STATE_CANCELLED


def _fired_at(marker: Path) -> float:
    """The time the handler wrote to `marker`, waiting (briefly) for the file to be written."""

    def written() -> str | None:
        return (marker.read_text() or None) if marker.exists() else None

    return float(wait_for(written, timeout_s=10, what=f"the handler to write {marker.name}"))


async def _cancels(
    address: str, *, samples: int, directory: Path, cancel_address: str = ""
) -> list[tuple[float, float]]:
    """(cancel → abort signal, cancel → CANCELLED seen) in ms, one pair per sample. The cancel is asked of
    `cancel_address` when given (another replica), else of `address`."""
    spec = echo_execution("abort_timed", json.dumps({"dir": str(directory)}).encode())
    measured: list[tuple[float, float]] = []
    async with channel(address) as chan, channel(cancel_address or address) as cancel_chan:
        stub = task_stub(chan)
        canceller = task_stub(cancel_chan)
        for index in range(_WARMUP + samples):
            response = await stub.SubmitExecution(tpb.SubmitExecutionRequest(execution=spec), timeout=30)
            execution_id = response.execution.id
            watch = stub.WatchExecution(tpb.WatchExecutionRequest(execution_id=execution_id), timeout=60)
            while True:  # until the handler has said it runs
                message = await watch.read()
                if not isinstance(message, tpb.WatchExecutionResponse):
                    raise RuntimeError(f"execution {execution_id} ended before its handler ran")
                if message.event.HasField("progress"):
                    break
            cancelled_at = monotonic_s()
            await canceller.CancelExecution(
                tpb.CancelExecutionRequest(execution_id=execution_id, reason="benchmark"), timeout=30
            )
            seen_at = 0.0
            while isinstance(message := await watch.read(), tpb.WatchExecutionResponse):
                event = message.event
                if event.HasField("execution_transition") and event.execution_transition.to_state == _CANCELLED:
                    seen_at = monotonic_s()
            if not seen_at:
                raise RuntimeError(f"the watch of execution {execution_id} ended without CANCELLED")
            fired_at = _fired_at(directory / f"{execution_id}.abort")
            if index >= _WARMUP:
                measured.append((1000 * (fired_at - cancelled_at), 1000 * (seen_at - cancelled_at)))
    return measured


def _record(result: ScenarioResult, phase: str, label: str, measured: list[tuple[float, float]]) -> None:
    to_abort = [pair[0] for pair in measured]
    to_seen = [pair[1] for pair in measured]
    for q in (50, 99):
        result.add(f"{phase}.abort_p{q}", f"{label}: cancel → abort signal p{q}", "ms", percentile(to_abort, q))
    for q in (50, 99):
        result.add(f"{phase}.seen_p{q}", f"{label}: cancel → CANCELLED seen p{q}", "ms", percentile(to_seen, q))


def run(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    result = ScenarioResult(name=NAME, title=TITLE)
    result.params = {
        "samples": sizes.cancel_samples,
        "load_per_s": sizes.cancel_load_rate,
        "load_batch": _LOAD_BATCH,
        "workers": sizes.workers,
        "slots_per_worker": sizes.worker_slots,
    }
    for number in range(1, bench.runs + 1):
        directory = bench.scratch("cancel")
        with taskwire(bench, workers=sizes.workers, slots=sizes.worker_slots) as running:
            bench.log(f"{NAME} run {number}/{bench.runs}: idle, {sizes.cancel_samples} cancels")
            measured = asyncio.run(_cancels(running.address, samples=sizes.cancel_samples, directory=directory))
            _record(result, "idle", "idle", measured)
            rate = sizes.cancel_load_rate
            bench.log(f"{NAME} run {number}/{bench.runs}: under {rate} tasks/s of load")
            load = spawn_module(
                "bench.loadgen", "--server", running.address, "--rate", str(rate), "--batch", str(_LOAD_BATCH)
            )
            try:
                load.wait_for_line(READY)
                measured = asyncio.run(_cancels(running.address, samples=sizes.cancel_samples, directory=directory))
            finally:
                load.stop()
            summary = SUMMARY.search(load.output)
            _record(result, "loaded", f"under {rate}/s load", measured)
            if summary is not None:
                submitted, failed, elapsed = int(summary[1]), int(summary[2]), float(summary[3])
                result.add("loaded.load_rate", f"under {rate}/s load: load achieved", "tasks/s", submitted / elapsed)
                if failed:
                    result.notes.append(f"run {number}: {failed} background submits failed")
    result.notes.append(
        f"{sizes.cancel_samples} cancels per phase and run, one at a time, each after the handler reported progress"
    )
    return result


__all__ = ["NAME", "TITLE", "run"]
