"""Recovery: the live state rebuilt from the store when the server starts, or merged into it later.

Active executions come back into memory with their history numbers; their
timers are armed again (retries, attempt timeouts, cancel grace, deadlines,
schedules); their PENDING task runs take their places in the ready queue, and
cold executions only their places. Attempts that were running are held by a
session without a stream until their workers reconnect and adopt them, or
that session's lease runs out and they are retried per their policy.

The same merge serves a replica that adopts the executions of another one (`Engine.adopt`): what it
holds already (in memory, or cold) is left as it is.

May use: the store (recover), the live executions, the worker pool, the cold
tier, the ready queues.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskwire.server.domain import State
from taskwire.server.store import RecoveredState, Store

from ._cold import ColdTier
from ._live import Executions, LiveExecution
from ._ready import ReadyQueues
from ._workers import WorkerPool


@dataclass(frozen=True, slots=True)
class Recovered:
    executions: int
    awaiting_workers: int
    merged: list[LiveExecution]  # the executions that came into memory (the caller settles them)
    cold: int = 0  # the cold executions whose places came


async def recover(
    *, store: Store, executions: Executions, pool: WorkerPool, cold: ColdTier, ready: ReadyQueues
) -> Recovered:
    return merge(await store.recover(), executions=executions, pool=pool, cold=cold, ready=ready)


def merge(
    state: RecoveredState, *, executions: Executions, pool: WorkerPool, cold: ColdTier, ready: ReadyQueues
) -> Recovered:
    """Take the executions of `state` that are not held yet (in memory or cold) into the live state."""
    holder = pool.recovery_holder()
    merged: list[LiveExecution] = []
    for snapshot in state.active:
        execution_id = snapshot.execution.id
        if execution_id in executions.by_id or any(cold.is_cold(t.id) for t in snapshot.task_runs):
            continue
        live = LiveExecution(
            snapshot.execution,
            {task_run.id: task_run for task_run in snapshot.task_runs},
            next_sequence=state.last_sequences.get(execution_id, 0) + 1,
        )
        executions.register(live)
        merged.append(live)
        executions.arm_execution_timers(live.execution)
        for task_run in live.task_runs.values():
            executions.figures.count(None, task_run)
            attempt = task_run.current_attempt
            if task_run.state is State.RUNNING and attempt is not None:
                pool.holders.hold((task_run.id, attempt.number), holder)
            executions.arm_recovered_task_run(task_run)
    merged_runs = [task_run for live in merged for task_run in live.task_runs.values()]
    executions.keys.restore(merged_runs)
    executions.rates.restore(merged_runs)
    merged_ids = {task_run.id for task_run in merged_runs}
    for task_run_id in state.pending_order:
        if task_run_id in merged_ids:
            task_run = executions.by_task_run[task_run_id].task_runs[task_run_id]
            ready.push(task_run.handler, task_run_id, task_run.priority, task_run.fairness_key)
    places = [c for c in state.cold if c.execution_id not in executions.by_id and not cold.is_cold(c.task_run_id)]
    cold.restore(places)
    pool.keep_recovered(holder)
    return Recovered(len(merged), len(holder.held), merged, cold=len({c.execution_id for c in places}))
