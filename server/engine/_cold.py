"""The cold tier: queued executions kept out of memory while the queue is long.

Once durable, an execution that nothing but a dispatch can change (PENDING, not
closing, no deadline, no attempt yet) leaves memory when more than
`ServerConfig.hot_queue_size` task runs are queued; only its task runs' places
in the ready queue stay. When the dispatcher reaches one, the next batch of its
handler's queue is read back from the store (`warm`); a cancel reads back the
one it needs (`load`). Memory stays small for a long queue, and a short one
never waits on the store.

May use: the store (reads), the live executions (to hold what comes back), the
admission queue's size, the ready queues, and one hook: records came back, so
dispatch may go on.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from taskwire.server.domain import DEFAULT_PRIORITY, State
from taskwire.server.store import ColdTaskRun, ExecutionSnapshot, Store

from ._admission import AdmissionQueue
from ._live import Executions, LiveExecution

if TYPE_CHECKING:
    from ._ready import ReadyQueues

log = logging.getLogger(__name__)

# Cold executions come back from the store this many at a time.
_WARM_BATCH = 256


def is_coldable(live: LiveExecution) -> bool:
    """Nothing but a dispatch can change it: no timer (deadline, schedule-to-start), no closing, no task run
    started or waiting; its place in the queue is the store's plain queue order (the default priority, no fairness
    key), no concurrency key counts it and no rate limit may hold it back."""
    execution = live.execution
    return (
        not live.retiring
        and execution.state is State.PENDING
        and execution.closing is None
        and execution.deadline is None
        and all(
            t.state is State.PENDING
            and not t.attempts
            and t.schedule_to_start_timeout is None
            and t.priority == DEFAULT_PRIORITY
            and not t.concurrency_key
            and not t.fairness_key
            and not t.rate_limit
            for t in live.task_runs.values()
        )
    )


class ColdTier:
    def __init__(
        self,
        *,
        store: Store,
        executions: Executions,
        admission: AdmissionQueue,
        ready: ReadyQueues,
        hot_queue_size: int,
        loaded: Callable[[], None],
    ) -> None:
        self._store = store
        self._executions = executions
        self._admission = admission
        self._ready = ready
        self._hot_queue_size = hot_queue_size
        self._loaded = loaded
        self._cold: dict[str, str] = {}  # task run id -> execution id
        self._loading: dict[str, asyncio.Future[None]] = {}  # execution id -> its load from the store
        self._warming: set[str] = set()  # handlers whose next cold task runs are being loaded
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    def is_cold(self, task_run_id: str) -> bool:
        return task_run_id in self._cold

    def restore(self, cold: Sequence[ColdTaskRun]) -> None:
        """Recovery: the queue places of cold executions come back (after the active ones); nothing else."""
        for task_run in cold:
            handler = sys.intern(task_run.handler)
            self._cold[task_run.task_run_id] = task_run.execution_id
            self._executions.figures.count_cold(handler)
            self._ready.push(handler, task_run.task_run_id)

    def give_up(self, snapshot: ExecutionSnapshot) -> bool:
        """A cold execution handed to another replica: its task runs are no longer cold nor counted (their
        places in the ready queue are dropped when the dispatcher reaches them). False when it is not cold."""
        task_runs = snapshot.task_runs
        if not task_runs or not all(task_run.id in self._cold for task_run in task_runs):
            return False
        for task_run in task_runs:
            del self._cold[task_run.id]
            self._executions.figures.uncount_given(task_run.handler)
        return True

    def maybe_freeze(self, live: LiveExecution) -> None:
        """After its first commit: let the execution leave memory if the queue is long and it may."""
        if self._admission.size <= self._hot_queue_size or not is_coldable(live):
            return
        executions = self._executions
        if executions.by_id.get(live.execution.id) is not live:
            return
        del executions.by_id[live.execution.id]
        for task_run_id in live.task_runs:
            del executions.by_task_run[task_run_id]
            self._cold[task_run_id] = live.execution.id

    async def load(self, execution_ids: Sequence[str]) -> None:
        """Bring cold executions back into memory (ids that are not cold are ignored)."""
        executions = self._executions
        waiting = [self._loading[e] for e in execution_ids if e in self._loading]
        wanted = [e for e in dict.fromkeys(execution_ids) if e not in self._loading and e not in executions.by_id]
        if wanted:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for execution_id in wanted:
                self._loading[execution_id] = done
            try:
                snapshots = await self._store.get_executions(wanted)
                sequences = await self._store.last_sequences(list(snapshots))
                for execution_id, snapshot in snapshots.items():
                    if not all(task_run.id in self._cold for task_run in snapshot.task_runs):
                        continue  # not cold: finished long ago, or live already
                    for task_run in snapshot.task_runs:
                        del self._cold[task_run.id]
                    live = LiveExecution(
                        snapshot.execution,
                        {task_run.id: task_run for task_run in snapshot.task_runs},
                        next_sequence=sequences.get(execution_id, 0) + 1,
                    )
                    executions.register(live)
                done.set_result(None)
            except BaseException as error:
                done.set_exception(error)
                raise
            finally:
                for execution_id in wanted:
                    del self._loading[execution_id]
        for other in waiting:
            await asyncio.shield(other)

    def warm(self, handler: str) -> None:
        """Load the next cold task runs of a handler's queue, then let dispatch go on."""
        if handler in self._warming or self._closed:
            return
        self._warming.add(handler)
        execution_ids = [self._cold[t] for t in self._ready.peek(handler, _WARM_BATCH) if t in self._cold]

        async def warm() -> None:
            try:
                await self.load(execution_ids)
            except Exception:
                log.exception("loading queued executions of %s failed", handler)
            finally:
                self._warming.discard(handler)
                self._loaded()

        task = asyncio.create_task(warm(), name=f"taskwire-warm-{handler}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
