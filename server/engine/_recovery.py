"""Recovery: the live state rebuilt from the store when the server starts.

Active executions come back into memory with their history numbers; their
timers are armed again (retries, attempt timeouts, cancel grace, deadlines,
schedules); their PENDING task runs take their places in the ready queue, and
cold executions only their places. Attempts that were running are held by a
session without a stream until their workers reconnect and adopt them, or
that session's lease runs out and they are retried per their policy.

May use: the store (recover), the live executions, the worker pool, the cold
tier, the ready queues.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskwire.server.domain import State
from taskwire.server.store import Store

from ._cold import ColdTier
from ._live import Executions, LiveExecution
from ._ready import ReadyQueues
from ._workers import WorkerPool


@dataclass(frozen=True, slots=True)
class Recovered:
    executions: int
    awaiting_workers: int


async def recover(
    *, store: Store, executions: Executions, pool: WorkerPool, cold: ColdTier, ready: ReadyQueues
) -> Recovered:
    recovered = await store.recover()
    holder = pool.recovery_holder()
    for snapshot in recovered.active:
        live = LiveExecution(
            snapshot.execution,
            {task_run.id: task_run for task_run in snapshot.task_runs},
            next_sequence=recovered.last_sequences.get(snapshot.execution.id, 0) + 1,
        )
        executions.register(live)
        executions.arm_execution_timers(live.execution)
        for task_run in live.task_runs.values():
            executions.figures.count(None, task_run)
            attempt = task_run.current_attempt
            if task_run.state is State.RUNNING and attempt is not None:
                pool.holders.hold((task_run.id, attempt.number), holder)
            executions.arm_recovered_task_run(task_run)
    recovered_runs = [task_run for live in executions.by_id.values() for task_run in live.task_runs.values()]
    executions.keys.restore(recovered_runs)
    executions.rates.restore(recovered_runs)
    for task_run_id in recovered.pending_order:
        owner = executions.by_task_run.get(task_run_id)
        if owner is not None:
            task_run = owner.task_runs[task_run_id]
            ready.push(task_run.handler, task_run_id, task_run.priority, task_run.fairness_key)
    cold.restore(recovered.cold)
    pool.keep_recovered(holder)
    return Recovered(
        executions=len(executions.by_id),
        awaiting_workers=len(holder.held),
    )
