"""Dispatch: PENDING task runs, by priority per handler (`_ready`), matched to workers' free slots in round robin,
the least busy workers first.

A dispatch is a new attempt: `TaskDispatched` is applied, the worker's session
holds the attempt (which counts against its slots) and the invocation goes down
its stream. A worker is never sent more attempts than its slots. The pass runs
soon after something may have changed (a task run queued, a slot freed, a
worker connected), or at once after a submit (`pump_now`), before the submit's
commit: dispatch does not wait for durability (see docs/design.md).

A retry after a lost attempt goes to another worker than the one that lost it,
while another serves the handler: it waits for that worker's free slot rather
than go back to one that did not run it (a worker that does not read its
stream, or whose handler process died, would lose it again).

May use: the ready queues, the live executions, the attempt holders, the cold
tier (to bring the next queued records back into memory).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from taskwire.server.domain import AttemptOutcome, Payload, RateLimitEmpty, State, TaskDispatched, TaskRun

from ._cold import ColdTier
from ._holders import AttemptHolders
from ._live import Executions, LiveExecution
from ._ready import Queued, ReadyQueues
from ._sessions import WorkerSession, went_to


class Dispatcher:
    def __init__(self, *, ready: ReadyQueues, executions: Executions, holders: AttemptHolders, cold: ColdTier) -> None:
        self.ready = ready
        self._executions = executions
        self._holders = holders
        self._cold = cold
        # Sessions that may have a free slot: every place that frees a slot adds its session, and the
        # pass drops the ones it finds full. So a pass looks at the few sessions with room, not at
        # every connected worker.
        self._maybe_free: dict[WorkerSession, None] = {}
        self._pump_handle: asyncio.Handle | None = None
        self.closed = False
        # Told when a pass leaves a worker with free slots: a replica may claim work held elsewhere.
        self.on_idle: Callable[[], None] | None = None
        # Wired by the engine: whether a worker other than the session's takes new work for the handler.
        # Wired by the engine: whether a connected worker that `besides` does not pick serves the handler.
        self.serves_elsewhere: Callable[[str, Callable[[WorkerSession], bool]], bool] = lambda handler, besides: False

    def enqueue(self, task_run: TaskRun) -> None:
        self.ready.push(task_run.handler, task_run.id, task_run.priority, task_run.fairness_key)
        self.schedule_pump()

    def slot_freed(self, session: WorkerSession) -> None:
        self._maybe_free[session] = None
        self.schedule_pump()

    def schedule_pump(self) -> None:
        if self._pump_handle is None and not self.closed:
            self._pump_handle = asyncio.get_running_loop().call_soon(self.pump)

    def pump_now(self) -> None:
        """Dispatch what was just queued before anything else runs: the commit of the submit that
        queued it can wait its turn."""
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self.pump()

    def pump(self) -> None:
        """Match PENDING task runs to free slots: by priority per handler, one task per free worker per round.

        Each round starts with the least busy workers (the largest share of their slots free), so a task
        that arrives alone goes to an idle worker rather than beside another task on a busy one. Among
        workers equally busy the order stays the same from one pass to the next: short tasks arriving one
        at a time, each done before the next, keep going to the same worker, whose code stays warm.
        """
        self._pump_handle = None
        if self.closed:
            return
        share_free: dict[WorkerSession, float] = {}
        for session in self._maybe_free:
            if (free_slots := session.free_slots) > 0:
                share_free[session] = free_slots / session.slots
        free = list(share_free)
        if len(set(share_free.values())) > 1:
            free.sort(key=share_free.__getitem__, reverse=True)  # stable: equals keep their order
        self._maybe_free = dict.fromkeys(free)
        if not free:
            return
        for handler in self.ready.handlers_with_work():
            # Round robin over the workers that serve the handler: the load spreads evenly, and a pass
            # looks only at the workers with a free slot, however many are connected.
            candidates = [session for session in free if handler in session.handlers and session.free_slots > 0]
            # Task runs the worker at hand still runs an earlier attempt of, or lost the last one of: another
            # worker may take them; those left go back to the front of the queue, and wait for that attempt's
            # end or another worker's free slot.
            set_aside: list[Queued] = []
            while candidates:
                next_round: list[WorkerSession] = []
                for session in candidates:
                    found = self._from_set_aside(set_aside, session) or self._next_dispatchable(
                        handler, session, set_aside
                    )
                    if found is None:
                        if set_aside:
                            continue  # the queue is empty, but another worker may take what was set aside
                        next_round = []
                        break
                    self._dispatch(found[0], found[1], session)
                    if session.free_slots > 0:
                        next_round.append(session)
                candidates = next_round
            for queued in reversed(set_aside):
                self.ready.pushleft(handler, queued)
        if self.on_idle is not None and any(session.free_slots > 0 for session in free):
            self.on_idle()

    def _pending(self, task_run_id: str) -> tuple[LiveExecution, TaskRun] | None:
        live = self._executions.by_task_run.get(task_run_id)
        if live is not None and live.task_runs[task_run_id].state is State.PENDING:
            return live, live.task_runs[task_run_id]
        return None  # it was cancelled while queued: dropped here, lazily

    def _from_set_aside(self, set_aside: list[Queued], session: WorkerSession) -> tuple[LiveExecution, TaskRun] | None:
        for index, queued in enumerate(set_aside):
            found = self._pending(queued.id)
            if found is None or not self._elsewhere(session, found[1]):
                del set_aside[index]
                if found is not None and self._may_go(*found):
                    return found
                return self._from_set_aside(set_aside, session)
        return None

    def _elsewhere(self, session: WorkerSession, task_run: TaskRun) -> bool:
        """The task run goes to another worker than `session`'s, or waits: that worker still runs an earlier
        attempt of it, or lost its last attempt while another worker serves the handler."""
        if self._holders.runs_on(session, task_run.id):
            return True
        last = task_run.current_attempt
        if (
            last is None
            or last.outcome is not AttemptOutcome.LOST
            or not went_to(last, session.instance_id, session.name)
        ):
            return False
        return self.serves_elsewhere(task_run.handler, lambda other: went_to(last, other.instance_id, other.name))

    def _next_dispatchable(
        self, handler: str, session: WorkerSession, set_aside: list[Queued]
    ) -> tuple[LiveExecution, TaskRun] | None:
        """The next PENDING task run of the handler's queue that `session` may run, or None (empty, or its
        next records are loading). Those that go elsewhere (`_elsewhere`) go to `set_aside`."""
        while (queued := self.ready.popleft(handler)) is not None:
            if self._cold.is_cold(queued.id):
                self.ready.pushleft(handler, queued)
                self._cold.warm(handler)  # this handler goes on once its next records are in memory
                return None
            found = self._pending(queued.id)
            if found is None:
                continue
            if self._elsewhere(session, found[1]):
                set_aside.append(queued)
                continue
            if not self._may_go(*found):
                continue  # it waits for a token of its rate limit
            return found
        return None

    def _may_go(self, live: LiveExecution, task_run: TaskRun) -> bool:
        """A task run with a rate limit takes a token to be dispatched; without one it waits for one."""
        if task_run.rate_limit and (empty := self._executions.rates.take(task_run)) is not None:
            self._executions.apply_task(live, task_run.id, RateLimitEmpty(empty))
            self._executions.settle(live)
            return False
        return True

    def _dispatch(self, live: LiveExecution, task_run: TaskRun, session: WorkerSession) -> None:
        number = task_run.attempt_count + 1
        queued_at = task_run.updated_at  # nothing changes a PENDING task run in the queue
        event = TaskDispatched(number, session.name, session.identity, session.instance_id)
        self._executions.apply_task(live, task_run.id, event)
        session.dispatches += 1
        self._holders.hold((task_run.id, number), session, dispatch=session.dispatches)
        dispatched = live.task_runs[task_run.id]
        attempt = dispatched.current_attempt
        assert attempt is not None
        assert session.link is not None
        session.link.invoke(
            dispatched,
            attempt,
            session.dispatches,
            queued_at=queued_at,
            trace_context=live.execution.trace_context,
            upstream=_upstream_outputs(live, dispatched),
        )
        self._executions.settle(live)


def _upstream_outputs(live: LiveExecution, task_run: TaskRun) -> dict[str, Payload]:
    """The outputs of the tasks `task_run` depends on (all succeeded, or it would not run), by task id."""
    if not task_run.depends_on:
        return {}
    wanted = set(task_run.depends_on)
    return {
        other.task_id: output
        for other in live.task_runs.values()
        if other.task_id in wanted and (output := other.output) is not None
    }
