"""Scenario 6: many connected workers: throughput with few vs many worker streams, same total slots.

200 taskwire-worker processes do not fit on 2 cores, so the workers here are bench/stream_workers.py:
one process holding N real Connect streams (one channel and connection each) that complete every
invocation at once. Each run measures, on a fresh server each time, `many_tasks` echo tasks submitted
in batches (as in scenario 1) to `many_streams[0]` streams and then to `many_streams[1]` streams, both
with `many_total_slots` slots in all; the figure of merit is the ratio of the two rates.
"""

from __future__ import annotations

import asyncio

from bench._common import Bench, ScenarioResult, cpu_seconds, spawn_module, taskwire
from bench.stream_workers import COMPLETED, READY
from bench.throughput import batched_end_to_end

NAME = "many-workers"
TITLE = "6. Many workers: connected worker streams, same total slots"


def _rate(bench: Bench, streams: int) -> tuple[float, float, float]:
    """(tasks/s end to end, server CPU %, stream-workers process CPU %); 100% is one core."""
    sizes = bench.sizes
    slots = max(1, sizes.many_total_slots // streams)
    with taskwire(bench, workers=0) as running:
        fleet = spawn_module(
            "bench.stream_workers", "--server", running.address, "--streams", str(streams), "--slots", str(slots)
        )
        try:
            fleet.wait_for_line(READY, timeout_s=120)
            running.server.wait_for_workers(streams, timeout_s=60)
            groups = [running.server_pids, [fleet.popen.pid]]
            before = [cpu_seconds(pids) for pids in groups]
            first, _, done = asyncio.run(
                batched_end_to_end(
                    running.address,
                    tasks=sizes.many_tasks,
                    batch_size=sizes.batch_size,
                    in_flight=sizes.batches_in_flight,
                )
            )
            server_cpu, fleet_cpu = (
                100 * (cpu_seconds(pids) - used) / (done - first) for pids, used in zip(groups, before, strict=True)
            )
        finally:
            fleet.stop()
        fleet.wait_for_line(COMPLETED)
    return sizes.many_tasks / (done - first), server_cpu, fleet_cpu


def run(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    few, many = sizes.many_streams
    result = ScenarioResult(name=NAME, title=TITLE)
    result.params = {"tasks": sizes.many_tasks, "streams": [few, many], "total_slots": sizes.many_total_slots}
    for number in range(1, bench.runs + 1):
        rates: dict[int, float] = {}
        for streams in (few, many):
            bench.log(f"{NAME} run {number}/{bench.runs}: {streams} streams")
            rates[streams], server_cpu, fleet_cpu = _rate(bench, streams)
            slots = max(1, sizes.many_total_slots // streams)
            label = f"{streams} streams × {slots} slots"
            result.add(f"streams_{streams}", f"{label}: end to end", "tasks/s", rates[streams])
            result.add(
                f"server_cpu_{streams}", f"{label}: server CPU, store writer included (100 = one core)", "%", server_cpu
            )
            result.add(f"fleet_cpu_{streams}", f"{label}: stream-workers process CPU", "%", fleet_cpu)
        result.add("ratio", f"{many} streams vs {few}: throughput ratio", "×", rates[many] / rates[few])
    result.notes.append(
        f"{sizes.many_tasks:,} echo tasks per measurement, batches of {sizes.batch_size}; workers are bare "
        "Connect streams that complete each invocation at once (bench/stream_workers.py)"
    )
    return result


__all__ = ["NAME", "TITLE", "run"]
