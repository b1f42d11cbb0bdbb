"""Scenario 5: server memory per queued task.

A fresh server with no worker connected (so nothing is dispatched) and a queue capacity above the
count takes `pending` echo tasks through SubmitExecutions (batches of 1,000). Its RSS is read once the
first batch is in (so allocator and cache warm-up is not charged to the tasks) and again once all are
queued; the difference over the tasks after the first batch is the memory per pending task.

Each run's store (stopped cleanly, `pending` tasks pending) is handed to the recovery scenario.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench._common import Bench, ScenarioResult, channel, echo_execution, rss_bytes, task_stub, taskwire
from taskwire.v1 import task_service_pb2 as tpb

NAME = "memory"
TITLE = "5. Server memory per pending task (no worker connected)"
BATCH = 1000
STORES_KEY = "pending_stores"


async def submit_pending(address: str, count: int, *, server_pid: int | None = None) -> tuple[int, int]:
    """Submit `count` echo tasks in batches of 1,000, two calls at a time.

    Returns the server's RSS after the first batch and after the last (0, 0 without `server_pid`).
    """
    request = tpb.SubmitExecutionsRequest(executions=[echo_execution()] * BATCH)
    async with channel(address) as chan:
        stub = task_stub(chan)
        first = min(BATCH, count)
        await stub.SubmitExecutions(tpb.SubmitExecutionsRequest(executions=[echo_execution()] * first), timeout=60)
        after_first = rss_bytes(server_pid) if server_pid else 0
        remaining = count - first
        batches = iter(range(remaining // BATCH))

        async def caller() -> None:
            for _ in batches:
                await stub.SubmitExecutions(request, timeout=120)

        await asyncio.gather(caller(), caller())
        if remaining % BATCH:
            tail = tpb.SubmitExecutionsRequest(executions=[echo_execution()] * (remaining % BATCH))
            await stub.SubmitExecutions(tail, timeout=60)
        stats = await stub.GetStats(tpb.GetStatsRequest(), timeout=10)
        if stats.queue.size != count:
            raise RuntimeError(f"expected {count} queued tasks, the server counts {stats.queue.size}")
        after_all = rss_bytes(server_pid) if server_pid else 0
    return after_first, after_all


def prepare_store(bench: Bench, directory: Path, count: int) -> tuple[Path, int, int]:
    """A store with `count` pending tasks, its server stopped cleanly: (path, RSS after the first batch,
    RSS after all).
    """
    db_path = directory / "taskwire.db"
    server_args = ("--queue-capacity", str(2 * count))
    with taskwire(bench, workers=0, server_args=server_args, db_path=db_path, graceful=True) as running:
        before, after = asyncio.run(submit_pending(running.address, count, server_pid=running.server_pid))
    return db_path, before, after


def run(bench: Bench) -> ScenarioResult:
    count = bench.sizes.pending
    result = ScenarioResult(name=NAME, title=TITLE)
    result.params = {"pending": count, "batch": BATCH}
    stores: list[Path] = bench.shared.setdefault(STORES_KEY, [])
    for number in range(1, bench.runs + 1):
        bench.log(f"{NAME} run {number}/{bench.runs}: {count:,} pending tasks")
        db_path, before, after = prepare_store(bench, bench.scratch("memory"), count)
        stores.append(db_path)
        charged = count - min(BATCH, count)
        result.add("per_task", "server RSS per pending task", "B", (after - before) / charged)
        result.add("rss_total", f"server RSS with {count:,} pending", "MiB", after / 1024**2)
        result.add("db_per_task", "SQLite file per pending task (for reference)", "B", _db_bytes(db_path) / count)
    result.notes.append(f"RSS difference between 1,000 and {count:,} pending, divided by the {count - BATCH:,} added")
    return result


def _db_bytes(db_path: Path) -> int:
    return sum(path.stat().st_size for path in db_path.parent.glob(db_path.name + "*"))


__all__ = ["NAME", "STORES_KEY", "TITLE", "prepare_store", "run", "submit_pending"]
