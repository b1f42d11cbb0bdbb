"""Scenario 6: many connected workers: throughput with few vs many workers, same total slots.

Two comparisons, each on a fresh server per measurement, `many_tasks` echo tasks submitted in batches
(as in scenario 1), `many_total_slots` slots in all on both sides:

- worker streams: `many_streams[0]` streams against `many_streams[1]` (4 × 50 slots against 200 × 1).
  200 taskwire-worker processes do not fit on 2 cores, so these workers are bench/stream_workers.py:
  one process holding N real Connect streams (one channel and connection each) that complete every
  invocation at once. This isolates the server's cost per stream.
- worker processes: `many_processes[0]` real taskwire-worker processes against `many_processes[1]`
  (4 × 50 slots against 50 × 4), each its own process with its own channel, executor and heartbeats.

The figure of merit of each is the ratio of the two rates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bench._common import Bench, Running, ScenarioResult, cpu_seconds, spawn_module, taskwire
from bench.stream_workers import COMPLETED, READY
from bench.throughput import batched_end_to_end

NAME = "many-workers"
TITLE = "6. Many workers: worker streams and worker processes, same total slots"


def _measure(bench: Bench, running: Running, worker_pids: Sequence[int]) -> tuple[float, float, float]:
    """(tasks/s end to end, server CPU %, workers' CPU %) of one batched run; 100% is one core."""
    sizes = bench.sizes
    groups = [running.server_pids, list(worker_pids)]
    before = [cpu_seconds(pids) for pids in groups]
    first, _, done = asyncio.run(
        batched_end_to_end(
            running.address, tasks=sizes.many_tasks, batch_size=sizes.batch_size, in_flight=sizes.batches_in_flight
        )
    )
    server_cpu, workers_cpu = (
        100 * (cpu_seconds(pids) - used) / (done - first) for pids, used in zip(groups, before, strict=True)
    )
    return sizes.many_tasks / (done - first), server_cpu, workers_cpu


def _streams_rate(bench: Bench, streams: int) -> tuple[float, float, float]:
    slots = max(1, bench.sizes.many_total_slots // streams)
    with taskwire(bench, workers=0) as running:
        fleet = spawn_module(
            "bench.stream_workers", "--server", running.address, "--streams", str(streams), "--slots", str(slots)
        )
        try:
            fleet.wait_for_line(READY, timeout_s=120)
            running.server.wait_for_workers(streams, timeout_s=60)
            measured = _measure(bench, running, [fleet.popen.pid])
        finally:
            fleet.stop()
        fleet.wait_for_line(COMPLETED)
    return measured


def _processes_rate(bench: Bench, processes: int) -> tuple[float, float, float]:
    slots = max(1, bench.sizes.many_total_slots // processes)
    with taskwire(bench, workers=0) as running:
        running.add_workers(processes, slots=slots)
        running.server.wait_for_workers(processes, timeout_s=60)
        return _measure(bench, running, running.worker_pids)


def run(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    total = sizes.many_total_slots
    result = ScenarioResult(name=NAME, title=TITLE)
    result.params = {
        "tasks": sizes.many_tasks,
        "streams": list(sizes.many_streams),
        "processes": list(sizes.many_processes),
        "total_slots": total,
    }
    for number in range(1, bench.runs + 1):
        for kind, counts, measure, unit, workers_label in (
            ("streams", sizes.many_streams, _streams_rate, "streams", "stream-workers process CPU"),
            ("processes", sizes.many_processes, _processes_rate, "worker processes", "taskwire-worker processes' CPU"),
        ):
            rates: dict[int, float] = {}
            for count in counts:
                bench.log(f"{NAME} run {number}/{bench.runs}: {count} {unit}")
                rates[count], server_cpu, workers_cpu = measure(bench, count)
                label = f"{count} {unit} × {max(1, total // count)} slots"
                result.add(f"{kind}_{count}", f"{label}: end to end", "tasks/s", rates[count])
                result.add(
                    f"server_cpu_{kind}_{count}",
                    f"{label}: server CPU, store writer included (100 = one core)",
                    "%",
                    server_cpu,
                )
                result.add(f"workers_cpu_{kind}_{count}", f"{label}: {workers_label}", "%", workers_cpu)
            few, many = counts
            result.add(f"{kind}_ratio", f"{many} {unit} vs {few}: throughput ratio", "×", rates[many] / rates[few])
    result.notes.append(
        f"{sizes.many_tasks:,} echo tasks per measurement, batches of {sizes.batch_size}, {total} slots in all; "
        "worker streams are bare Connect streams that complete each invocation at once (bench/stream_workers.py), "
        "worker processes are taskwire-worker"
    )
    return result


__all__ = ["NAME", "TITLE", "run"]
