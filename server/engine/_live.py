"""The live executions, and the one place their records change.

Every change goes through the domain's pure transition functions: an event is
applied, the new record is staged for the store and recorded in the history,
and the transition's effects are carried out (timers here; the ready queue and
the worker's stream through the hooks the engine wires in). `settle` then asks
the planner for follow-ups until an execution has none; a terminal execution
leaves memory once its end is durable. The queue figures (size, pending and in
flight per handler) are kept in step with task run states here too, because
this is where states change.

May use: the domain, the clock, the timers, the committer, the history, the
admission queue. Knows nothing of workers or the ready queue but the two hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from taskwire.server.domain import (
    ArmAttemptTimeout,
    Attempt,
    AttemptEnded,
    CancelGraceExpired,
    CancelOnWorker,
    Effect,
    Enqueue,
    Execution,
    ExecutionEvent,
    ExecutionFinished,
    ExecutionFollowUp,
    ExecutionTimeoutFired,
    InvalidTransition,
    KeyFull,
    KeyPlaceFree,
    RateTokenGranted,
    ReasonCode,
    RetryDue,
    ScheduleDue,
    ScheduleRetry,
    StartTimedOut,
    State,
    TaskProgressed,
    TaskRun,
    TaskRunEvent,
    TaskRunFinished,
    TaskTimedOut,
    plan_follow_ups,
    transition_execution,
    transition_task_run,
)
from taskwire.server.store import Committer, ExecutionSnapshot

from ._admission import AdmissionQueue
from ._clock import Clock
from ._history import History
from ._keys import ConcurrencyKeys
from ._observer import Observer, Unobserved
from ._rates import RateLimits
from ._sessions import AttemptLog, AttemptProgress
from ._timers import Timers

log = logging.getLogger(__name__)

_QUEUED = (State.PENDING, State.WAITING)
# A planner that keeps finding work after this many rounds has a bug; stop rather than spin.
_MAX_SETTLE_ROUNDS = 10_000


@dataclass(eq=False)
class LiveExecution:
    """An active execution held in memory: its records and the next number of its history."""

    execution: Execution
    task_runs: dict[str, TaskRun]  # in submission order
    next_sequence: int = 1  # the history's (History alone moves it)
    retiring: bool = False
    key_taken: bool = False  # another replica committed its idempotency key first: never written (`Submits`)

    def snapshot(self) -> ExecutionSnapshot:
        return ExecutionSnapshot(self.execution, tuple(self.task_runs.values()))


def adjust_count(counts: dict[str, int], key: str, delta: int) -> None:
    """Add `delta` to a per-key figure, dropping the key at zero so that idle handlers leave the stats."""
    count = counts.get(key, 0) + delta
    if count:
        counts[key] = count
    else:
        counts.pop(key, None)


class Figures:
    """The queue size and the per-handler pending / in-flight counts, in step with task run states."""

    def __init__(self, admission: AdmissionQueue, observer: Observer | None = None) -> None:
        self._admission = admission
        self._observer: Observer = observer or Unobserved()
        self.pending_by_handler: dict[str, int] = {}
        self.in_flight_by_handler: dict[str, int] = {}

    def count(self, before: TaskRun | None, after: TaskRun, *, admitted: bool = False) -> None:
        """`before` None: a new or recovered task run (`admitted`: its room was reserved on submit)."""
        self._observer.task_run_changed(before, after)
        was_queued = before is not None and before.state in _QUEUED
        is_queued = after.state in _QUEUED
        if is_queued and not was_queued and not admitted:
            self._admission.add(1)
        elif was_queued and not is_queued:
            self._admission.release(1)
        handler = after.handler
        pending = (after.state is State.PENDING) - (before is not None and before.state is State.PENDING)
        if pending:
            adjust_count(self.pending_by_handler, handler, pending)
        running = (after.state is State.RUNNING) - (before is not None and before.state is State.RUNNING)
        if running:
            adjust_count(self.in_flight_by_handler, handler, running)

    def count_cold(self, handler: str) -> None:
        """A queued task run kept out of memory (the cold tier) counts as queued and pending all the same."""
        self._admission.add(1)
        adjust_count(self.pending_by_handler, handler, 1)

    def uncount_given(self, handler: str, state: State = State.PENDING) -> None:
        """A task run (in memory or cold) handed to another replica leaves the figures, as if it were cancelled
        (RUNNING only when its worker went to that replica)."""
        if state in _QUEUED:
            self._admission.release(1)
        if state is State.PENDING:
            adjust_count(self.pending_by_handler, handler, -1)
        elif state is State.RUNNING:
            adjust_count(self.in_flight_by_handler, handler, -1)


def _unwired(*_: object) -> None:
    raise AssertionError("the engine wires this hook before use")


class Executions:
    def __init__(
        self,
        *,
        clock: Clock,
        timers: Timers,
        committer: Committer,
        history: History,
        figures: Figures,
        keys: ConcurrencyKeys,
        rates: RateLimits,
        cancel_grace_s: float,
    ) -> None:
        self._clock = clock
        self._timers = timers
        self._committer = committer
        self._history = history
        self.figures = figures
        self.keys = keys
        self.rates = rates
        self._cancel_grace_s = cancel_grace_s
        self.by_id: dict[str, LiveExecution] = {}
        self.by_task_run: dict[str, LiveExecution] = {}
        # Wired by the engine: a task run became PENDING; a running attempt must
        # be stopped on its worker; an execution left memory.
        self.enqueue: Callable[[TaskRun], None] = _unwired
        # Wired by the engine: whether a connected worker takes new work for a handler.
        self.is_served: Callable[[str], bool] = _unwired  # type: ignore[assignment]
        self.cancel_on_worker: Callable[[CancelOnWorker], None] = _unwired
        self.retired: Callable[[LiveExecution], None] = _unwired

    def register(self, live: LiveExecution) -> None:
        self.by_id[live.execution.id] = live
        for task_run_id in live.task_runs:
            self.by_task_run[task_run_id] = live

    def current_attempt(self, task_run_id: str) -> Attempt | None:
        """The attempt of a live task run that is running now, if any."""
        live = self.by_task_run.get(task_run_id)
        if live is None:
            return None
        current = live.task_runs[task_run_id].current_attempt
        return current if current is not None and current.is_running else None

    def is_current_attempt(self, task_run_id: str, attempt: int) -> bool:
        current = self.current_attempt(task_run_id)
        return current is not None and current.number == attempt

    def queue(self, live: LiveExecution, task_run: TaskRun) -> None:
        """A task run became PENDING: into its handler's queue at its priority, with its schedule-to-start timer.

        Said in its history when no connected worker serves its handler: a wait nobody will end is not silent.
        One whose concurrency key is full waits WAITING(CONCURRENCY_LIMIT) for a place instead.
        """
        if task_run.concurrency_key and (full := self.keys.take(task_run)) is not None:
            self.apply_task(live, task_run.id, KeyFull(full))
            return
        self.enqueue(task_run)
        limit = task_run.schedule_to_start_timeout
        served = self.is_served(task_run.handler)
        if limit is None and served:
            return
        now = self._clock.now()
        self._arm_start_timeout(task_run, since=now)
        if not served:
            text = f"no connected worker serves handler {task_run.handler!r}; the task waits for one"
            text += (
                f" for at most {limit.total_seconds():g}s" if limit is not None else " (no schedule-to-start timeout)"
            )
            self._history.note(live, now, task_run, text)

    def admit_waiting(self, task_run_id: str, code: ReasonCode = ReasonCode.CONCURRENCY_LIMIT) -> bool:
        """What the task run waits for (`code`: a place of its concurrency key, a token of its rate limit) is
        its now: it becomes PENDING and queues. False when it no longer waits for it."""
        live = self.by_task_run.get(task_run_id)
        if live is None:
            return False
        task_run = live.task_runs[task_run_id]
        if task_run.state is not State.WAITING or task_run.reason is None or task_run.reason.code is not code:
            return False
        self.report(task_run_id, KeyPlaceFree() if code is ReasonCode.CONCURRENCY_LIMIT else RateTokenGranted())
        return True

    def _arm_start_timeout(self, task_run: TaskRun, *, since: datetime) -> None:
        if task_run.schedule_to_start_timeout is not None:
            event = StartTimedOut(task_run.attempt_count)
            self._arm_task_timer(("start", task_run.id), since + task_run.schedule_to_start_timeout, task_run.id, event)

    # ---- Applying events ------------------------------------------------------------------------

    def apply_task(self, live: LiveExecution, task_run_id: str, event: TaskRunEvent) -> None:
        before = live.task_runs[task_run_id]
        now = self._clock.now()
        result = transition_task_run(before, event, now)
        if not result.applied:
            return
        self._store_task_run(live, before, result.record)
        self._history.task_run_transition(live, now, before, result.record)
        for effect in result.effects:
            self._carry_out(effect)

    def apply_execution(self, live: LiveExecution, event: ExecutionEvent) -> None:
        before = live.execution
        now = self._clock.now()
        result = transition_execution(before, event, now)
        if not result.applied:
            return
        live.execution = result.record
        self._committer.stage_execution(result.record)
        self._history.execution_transition(live, now, before, result.record)
        for effect in result.effects:
            self._carry_out(effect)

    def report(self, task_run_id: str, event: TaskRunEvent) -> None:
        """An event about a task run from outside (a worker's report, a timer), then its follow-ups."""
        live = self.by_task_run.get(task_run_id)
        if live is None:
            return  # long finished: nothing to apply
        self.apply_task(live, task_run_id, event)
        self.settle(live)

    def progress(self, report: AttemptProgress) -> None:
        """Progress changes no state; it is stored with the task run and recorded in the history."""
        live = self.by_task_run.get(report.task_run_id)
        if live is None:
            return
        before = live.task_runs[report.task_run_id]
        now = self._clock.now()
        result = transition_task_run(before, TaskProgressed(report.attempt, report.fraction, report.message), now)
        if not result.applied:
            return
        self._store_task_run(live, before, result.record)
        fraction = result.record.progress.fraction if result.record.progress else report.fraction
        self._history.progress(live, now, before, report, fraction)

    def log_line(self, report: AttemptLog) -> None:
        live = self.by_task_run.get(report.task_run_id)
        if live is not None and self.is_current_attempt(report.task_run_id, report.attempt):
            self._history.log(live, self._clock.now(), live.task_runs[report.task_run_id], report)

    def _store_task_run(self, live: LiveExecution, before: TaskRun, after: TaskRun) -> None:
        live.task_runs[after.id] = after
        self.figures.count(before, after)
        if after.concurrency_key:
            self.keys.changed(before, after)
        if after.rate_limit and before.state is State.PENDING and after.state not in (State.PENDING, State.RUNNING):
            self.rates.left_queue(after)
        self._committer.stage_task_run(after)

    def settle(self, live: LiveExecution) -> None:
        """Apply the planner's follow-ups until there are none; retire the execution once terminal."""
        for _ in range(_MAX_SETTLE_ROUNDS):
            follow_ups = plan_follow_ups(live.execution, list(live.task_runs.values()))
            if not follow_ups:
                break
            for follow_up in follow_ups:
                if isinstance(follow_up, ExecutionFollowUp):
                    self.apply_execution(live, follow_up.event)
                else:
                    self.apply_task(live, follow_up.task_run_id, follow_up.event)
        else:
            log.error("execution %s did not settle after %d rounds", live.execution.id, _MAX_SETTLE_ROUNDS)
        if live.execution.state.is_terminal and not live.retiring:
            live.retiring = True
            self._committer.after_commit(lambda: self._retire(live))

    def forget(self, live: LiveExecution) -> None:
        """The execution leaves memory (its records and task runs by id)."""
        self.by_id.pop(live.execution.id, None)
        for task_run_id in live.task_runs:
            self.by_task_run.pop(task_run_id, None)

    def _retire(self, live: LiveExecution) -> None:
        """Drop a finished execution from memory once its end is durable; the store has it all."""
        self.forget(live)
        self.retired(live)

    # ---- Effects and timers ---------------------------------------------------------------------

    def _carry_out(self, effect: Effect) -> None:
        timers = self._timers
        if isinstance(effect, Enqueue):
            live = self.by_task_run[effect.task_run_id]
            self.queue(live, live.task_runs[effect.task_run_id])
        elif isinstance(effect, ScheduleRetry):
            self._arm_task_timer(("retry", effect.task_run_id), effect.at, effect.task_run_id, RetryDue())
        elif isinstance(effect, ArmAttemptTimeout):
            key = ("timeout", effect.task_run_id, effect.attempt)
            self._arm_task_timer(key, effect.at, effect.task_run_id, TaskTimedOut(effect.attempt))
        elif isinstance(effect, AttemptEnded):
            timers.disarm(("timeout", effect.task_run_id, effect.attempt))
            timers.disarm(("grace", effect.task_run_id, effect.attempt))
        elif isinstance(effect, CancelOnWorker):
            self.cancel_on_worker(effect)
            if self.is_current_attempt(effect.task_run_id, effect.attempt):
                self.arm_cancel_grace(effect.task_run_id, effect.attempt)
        elif isinstance(effect, TaskRunFinished):
            timers.disarm(("retry", effect.task_run_id))
            timers.disarm(("start", effect.task_run_id))
        elif isinstance(effect, ExecutionFinished):
            timers.disarm(("deadline", effect.execution_id))
            timers.disarm(("schedule", effect.execution_id))

    def _arm_task_timer(self, key: tuple[str | int, ...], at: datetime, task_run_id: str, event: TaskRunEvent) -> None:
        self._timers.arm_at(key, at, lambda: self._on_task_timer(task_run_id, event))

    def arm_recovered_task_run(self, task_run: TaskRun) -> None:
        """The timers of a task run read back from the store: its retry, its wait in the queue, its attempt's
        timeout and grace. A PENDING task run has waited since it last changed (nothing changes it in the queue)."""
        reason = task_run.reason.code if task_run.reason else None
        if task_run.state is State.PENDING:
            self._arm_start_timeout(task_run, since=task_run.updated_at)
        if task_run.state is State.WAITING and task_run.not_before is not None and reason is ReasonCode.RETRY_BACKOFF:
            self._carry_out(ScheduleRetry(task_run.id, task_run.not_before))
        attempt = task_run.current_attempt
        if task_run.state is State.RUNNING and attempt is not None:
            if task_run.timeout is not None:
                self._carry_out(ArmAttemptTimeout(task_run.id, attempt.number, attempt.started_at + task_run.timeout))
            if task_run.pending_cancel is not None:
                self.arm_cancel_grace(task_run.id, attempt.number)

    def arm_cancel_grace(self, task_run_id: str, attempt: int) -> None:
        self._timers.arm_in(
            ("grace", task_run_id, attempt),
            self._cancel_grace_s,
            lambda: self._on_task_timer(task_run_id, CancelGraceExpired(attempt)),
        )

    def arm_execution_timers(self, execution: Execution) -> None:
        execution_id = execution.id
        if execution.deadline is not None and execution.state.is_active:
            self._timers.arm_at(
                ("deadline", execution_id),
                execution.deadline,
                lambda: self._on_execution_timer(execution_id, ExecutionTimeoutFired()),
            )
        if execution.state is State.WAITING and execution.not_before is not None:
            self._timers.arm_at(
                ("schedule", execution_id),
                execution.not_before,
                lambda: self._on_execution_timer(execution_id, ScheduleDue()),
            )

    def _on_task_timer(self, task_run_id: str, event: TaskRunEvent) -> None:
        try:
            self.report(task_run_id, event)
        except InvalidTransition as error:
            log.debug("timer event no longer applies: %s", error)

    def _on_execution_timer(self, execution_id: str, event: ExecutionEvent) -> None:
        live = self.by_id.get(execution_id)
        if live is None:
            return
        try:
            self.apply_execution(live, event)
        except InvalidTransition as error:
            log.debug("timer event no longer applies: %s", error)
            return
        self.settle(live)
