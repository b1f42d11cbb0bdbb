"""Scenario 7: recovery, from `taskwire-server` start to serving, with `pending` tasks in the store;
then the backlog drained by workers.

The store is prepared by submitting through a real server that is then stopped cleanly (the memory
scenario's stores are reused when it ran first). Each run starts ``taskwire-server`` on it and
times: process start → its "listening" line (recovery runs before the server listens) → the first
GetStats that succeeds, which must count every pending task. For reference, the same is timed on an
empty store: what any start costs (interpreter, imports, gRPC) whatever the store holds.

The drain: a copy of the store is served again and the usual workers connect; from the first look at
the queue after they are all connected until every task has completed durably, the tasks that were
left (queued or running at that look) over the time they took. Most of the backlog is in the cold tier
at the start, so this is dispatch from the store, not from memory. Its reference, the batched rate end
to end with the same workers on a fresh server (as scenario 1 measures it), is measured just before each
drain: the two are compared side by side, not across the minutes between this scenario and scenario 1.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import grpc

from bench._common import Bench, ScenarioResult, channel, monotonic_s, rss_bytes, task_stub, taskwire, wait_drained
from bench.memory import STORES_KEY, prepare_store
from bench.throughput import batched_rate
from taskwire.v1 import task_service_pb2 as tpb
from tests.harness import ServerProcess, start_server

NAME = "recovery"
TITLE = "7. Recovery: server start → serving, with pending tasks in the store"


def _first_stats(server: ServerProcess, expected: int) -> None:
    while True:
        try:
            stats = server.stats()
        except grpc.RpcError:
            time.sleep(0.002)
            continue
        if stats.queue.size != expected:
            raise RuntimeError(f"recovered {stats.queue.size} queued tasks, expected {expected}")
        return


def start_to_serving(db_path: Path, expected: int, capacity: int) -> tuple[float, float, int]:
    """(start → listening line, start → first successful GetStats) in seconds, and RSS once serving."""
    started = time.monotonic()
    server = start_server(db_path, "--queue-capacity", str(capacity))
    try:
        listening = time.monotonic()
        _first_stats(server, expected)
        serving = time.monotonic()
        rss = rss_bytes(server.process.popen.pid)
        server.process.stop(timeout_s=60)
    finally:
        server.process.kill()
    return listening - started, serving - started, rss


async def _drained(address: str) -> float:
    """Tasks per second from now until the server has nothing queued or running."""
    async with channel(address) as chan:
        stub = task_stub(chan)
        stats = await stub.GetStats(tpb.GetStatsRequest(), timeout=30)
        started, left = monotonic_s(), stats.queue.size + stats.in_flight
        done = await wait_drained(stub)
    return left / (done - started)


def drain_rate(bench: Bench, store: Path, capacity: int) -> float:
    """Tasks/s of the usual workers draining a copy of `store` (see the module's docstring)."""
    directory = bench.scratch("drain")
    for path in store.parent.glob(store.name + "*"):
        shutil.copy2(path, directory / path.name)
    server_args = ("--queue-capacity", str(capacity))
    with taskwire(bench, server_args=server_args, db_path=directory / store.name) as running:
        running.add_workers(bench.sizes.workers, slots=bench.sizes.worker_slots)
        return asyncio.run(_drained(running.address))


def run(bench: Bench) -> ScenarioResult:
    count = bench.sizes.pending
    capacity = 2 * count
    result = ScenarioResult(name=NAME, title=TITLE)
    result.params = {"pending": count}
    stores: list[Path] = list(bench.shared.get(STORES_KEY, []))
    if not stores:
        bench.log(f"{NAME}: preparing a store with {count:,} pending tasks")
        stores.append(prepare_store(bench, bench.scratch("recovery"), count)[0])
    for number in range(1, bench.runs + 1):
        bench.log(f"{NAME} run {number}/{bench.runs}: empty store, then {count:,} pending")
        empty = bench.scratch("recovery-empty") / "taskwire.db"
        _, empty_ready, empty_rss = start_to_serving(empty, 0, capacity)
        result.add("empty_ready", "empty store: start → first GetStats", "s", empty_ready)
        to_listen, to_ready, rss = start_to_serving(stores[(number - 1) % len(stores)], count, capacity)
        result.add("listening", f"{count:,} pending: start → listening line", "s", to_listen)
        result.add("ready", f"{count:,} pending: start → first GetStats", "s", to_ready)
        result.add("rss_per_task", f"{count:,} pending: RSS per task after recovery", "B", (rss - empty_rss) / count)
        bench.log(f"{NAME} run {number}/{bench.runs}: batches of {bench.sizes.batch_size} end to end, the reference")
        rate = batched_rate(bench)
        result.add("drain.batched_tasks_per_s", "batched end to end, just before the drain", "tasks/s", rate)
        bench.log(f"{NAME} run {number}/{bench.runs}: {count:,} pending drained by {bench.sizes.workers} workers")
        rate = drain_rate(bench, stores[(number - 1) % len(stores)], capacity)
        result.add("drain.tasks_per_s", f"{count:,} pending drained by the workers", "tasks/s", rate)
    result.notes.append(
        f"{len(stores)} store(s) prepared by submitting through a server that was then stopped cleanly; "
        "warm OS page cache"
    )
    result.notes.append(
        f"drain: {bench.sizes.workers} taskwire-worker processes × {bench.sizes.worker_slots} slots on a copy "
        "of the store; tasks left after they connected / time until every one completed durably"
    )
    return result


__all__ = ["NAME", "TITLE", "drain_rate", "run", "start_to_serving"]
