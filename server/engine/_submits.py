"""Submits: validation, admission to the bounded queue, idempotency keys, and new executions.

A submit is validated, admitted (room reserved for all its task runs, or
refused / waited for, see `_admission`), made into records, queued, and
answered once durable. Single submits that arrive together without keys and
fail fast (`submit_each`) are each validated and admitted on their own, and
share one dispatch pass and one wait for their commit. An idempotency key makes a repeat return the execution
the first request made (the same request) or raise `IdempotencyConflict`
(another one); keys are looked up in memory first, then in the store, and a
waiting submit asks again after it got room, since an identical submit may have
won the race meanwhile.

May use: the store (key and execution reads), the committer, the admission
queue, the live executions, the history, the cold tier, the dispatcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from taskwire.server.domain import (
    Execution,
    ExecutionSpec,
    IdempotencyConflict,
    Limits,
    NotFound,
    Reused,
    ShuttingDown,
    State,
    TaskwireError,
    ValidationError,
    create_execution,
    validate_execution_spec,
)
from taskwire.server.store import Committer, ExecutionSnapshot, NewExecution, Store

from ._admission import AdmissionQueue
from ._clock import Clock
from ._cold import ColdTier
from ._dispatch import Dispatcher
from ._history import History
from ._ids import new_ids
from ._live import Executions, LiveExecution


@dataclass(eq=False)
class _KeyEntry:
    """An idempotency key this server has seen, and the durability of the execution it made."""

    key: str
    fingerprint: str  # of the request that made the execution; empty matches any request
    execution_id: str
    committed: asyncio.Future[None]
    taken: bool = False  # another replica committed the key first: its execution is the one (`Submits.key_taken`)


@dataclass(frozen=True, slots=True)
class SubmitResult:
    snapshot: ExecutionSnapshot
    deduplicated: bool


@dataclass(frozen=True, slots=True)
class SubmitItem:
    """One execution of a batch submit: a spec to create, or the error its conversion already met."""

    spec: ExecutionSpec | None
    fingerprint: str
    error: TaskwireError | None = None


@dataclass(frozen=True, slots=True)
class BatchItemResult:
    execution_id: str = ""
    deduplicated: bool = False
    error: TaskwireError | None = None


class Submits:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        limits: Limits,
        committer: Committer,
        admission: AdmissionQueue,
        executions: Executions,
        history: History,
        cold: ColdTier,
        dispatcher: Dispatcher,
        rate_limits: Collection[str] = (),
        shared_keys: bool = False,
    ) -> None:
        self._store = store
        # Replicas share the store's keys: another may commit a key this one just claimed (see `key_taken`).
        self._shared_keys = shared_keys
        self._held: dict[str, LiveExecution] = {}  # keyed executions out of dispatch until their commit, by id
        self._rate_limits = rate_limits
        self._clock = clock
        self._limits = limits
        self._committer = committer
        self._admission = admission
        self._executions = executions
        self._history = history
        self._cold = cold
        self._dispatcher = dispatcher
        self._keys: dict[str, _KeyEntry] = {}
        self.accepting = True

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise ShuttingDown("the server is shutting down and accepts no new work")

    async def submit(
        self,
        spec: ExecutionSpec,
        *,
        fingerprint: str,
        wait_for_room: bool,
        timeout_s: float | None,
        submitted_by: str = "",
    ) -> SubmitResult:
        """Validate, admit, store durably; or return the execution an identical earlier submit made."""
        self._check_accepting()
        spec = self._validate(spec, "execution")
        key = spec.idempotency_key
        if key:
            entry = await self._lookup_key(key)
            if entry is not None:
                return await self._deduplicate(entry, fingerprint)
        await self._admission.admit(len(spec.tasks), wait=wait_for_room, timeout_s=timeout_s)
        if key:
            # An identical submit may have won the race while this one waited for room; its execution
            # may even have finished and left memory since, so a waiting submit asks the store too.
            try:
                entry = await self._lookup_key(key) if wait_for_room else self._keys.get(key)
            except BaseException:
                self._admission.release(len(spec.tasks))
                raise
            if entry is not None:
                self._admission.release(len(spec.tasks))
                return await self._deduplicate(entry, fingerprint)
        live = self._create(spec, fingerprint, submitted_by)
        self._dispatcher.pump_now()
        await self._committer.durable()
        if live.key_taken:
            return await self._lost_to_another(key, fingerprint)
        return SubmitResult(live.snapshot(), deduplicated=False)

    async def submit_each(
        self, specs: Sequence[ExecutionSpec], *, submitted_by: str = ""
    ) -> list[SubmitResult | TaskwireError]:
        """What `submit` does for each spec, failing fast, with one dispatch pass and one wait for the commit:
        each is validated and admitted on its own (an error refuses it alone, in its place in the result), so a
        full queue refuses those that no longer fit. For specs without an idempotency key (ValueError)."""
        if any(spec.idempotency_key for spec in specs):
            raise ValueError("submit_each takes specs without an idempotency key; submit() makes those")
        self._check_accepting()
        made: list[LiveExecution | TaskwireError] = []
        for spec in specs:
            try:
                spec = self._validate(spec, "execution")
                await self._admission.admit(len(spec.tasks), wait=False, timeout_s=None)
            except TaskwireError as error:
                made.append(error)
                continue
            made.append(self._create(spec, "", submitted_by))
        if any(isinstance(outcome, LiveExecution) for outcome in made):
            self._dispatcher.pump_now()
            await self._committer.durable()
        return [
            SubmitResult(outcome.snapshot(), deduplicated=False) if isinstance(outcome, LiveExecution) else outcome
            for outcome in made
        ]

    async def submit_many(
        self,
        items: Sequence[SubmitItem],
        *,
        wait_for_room: bool,
        timeout_s: float | None,
        submitted_by: str = "",
    ) -> list[BatchItemResult]:
        """Per-item validation and idempotency; the new executions are admitted together or not at all."""
        self._check_accepting()
        results: list[BatchItemResult] = [BatchItemResult() for _ in items]
        to_create: list[tuple[int, ExecutionSpec, str]] = []
        first_with_key: dict[str, tuple[int, str]] = {}  # key -> (index, fingerprint) of its first item here
        repeats: list[tuple[int, int]] = []  # (index, index of the earlier item with the same key)
        known: list[tuple[int, _KeyEntry, str]] = []  # (index, entry of an existing execution, fingerprint)
        for index, item in enumerate(items):
            if item.error is not None or item.spec is None:
                results[index] = BatchItemResult(error=item.error)
                continue
            try:
                spec = self._validate(item.spec, f"executions[{index}]")
            except ValidationError as error:
                results[index] = BatchItemResult(error=error)
                continue
            key = spec.idempotency_key
            if key in first_with_key:
                first, fingerprint = first_with_key[key]
                if fingerprint != item.fingerprint:
                    results[index] = BatchItemResult(error=IdempotencyConflict(key, f"executions[{first}]"))
                else:
                    repeats.append((index, first))
                continue
            if key:
                first_with_key[key] = (index, item.fingerprint)
                entry = await self._lookup_key(key)
                if entry is not None:
                    known.append((index, entry, item.fingerprint))
                    continue
            to_create.append((index, spec, item.fingerprint))
        claimed: dict[str, _KeyEntry] = {}  # keys used while this batch waited for room, found in the store
        made: list[tuple[int, LiveExecution, str]] = []
        if to_create:
            tasks = sum(len(spec.tasks) for _, spec, _ in to_create)
            await self._admission.admit(tasks, wait=wait_for_room, timeout_s=timeout_s)
            if wait_for_room:
                try:
                    for _, spec, _ in to_create:
                        key = spec.idempotency_key
                        if key and (entry := await self._lookup_key(key)) is not None:
                            claimed[key] = entry
                except BaseException:
                    self._admission.release(tasks)
                    raise
        for index, spec, fingerprint in to_create:
            key = spec.idempotency_key
            entry = (self._keys.get(key) or claimed.get(key)) if key else None
            if entry is not None:  # claimed by a concurrent submit while this batch waited for room
                self._admission.release(len(spec.tasks))
                known.append((index, entry, fingerprint))
                continue
            live = self._create(spec, fingerprint, submitted_by)
            results[index] = BatchItemResult(execution_id=live.execution.id)
            made.append((index, live, fingerprint))
        self._dispatcher.pump_now()
        await self._committer.durable()
        for index, live, fingerprint in made:
            if live.key_taken:
                try:
                    outcome = await self._lost_to_another(live.execution.idempotency_key, fingerprint)
                    results[index] = BatchItemResult(execution_id=outcome.snapshot.execution.id, deduplicated=True)
                except TaskwireError as error:
                    results[index] = BatchItemResult(error=error)
        for index, entry, fingerprint in known:
            try:
                outcome = await self._deduplicate(entry, fingerprint)
                results[index] = BatchItemResult(execution_id=outcome.snapshot.execution.id, deduplicated=True)
            except TaskwireError as error:
                results[index] = BatchItemResult(error=error)
        for index, first in repeats:
            earlier = results[first]
            results[index] = BatchItemResult(earlier.execution_id, deduplicated=True, error=earlier.error)
        return results

    async def _lookup_key(self, key: str) -> _KeyEntry | None:
        entry = self._keys.get(key)
        if entry is not None:
            return entry
        hit = await self._store.find_idempotency_key(key)
        if key in self._keys:  # claimed while the store was read
            return self._keys[key]
        if hit is None:
            return None
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        committed.set_result(None)
        return _KeyEntry(key, hit.request_fingerprint, hit.execution_id, committed)

    async def _deduplicate(self, entry: _KeyEntry, fingerprint: str) -> SubmitResult:
        if entry.fingerprint and entry.fingerprint != fingerprint:
            raise IdempotencyConflict(entry.key, entry.execution_id)
        await asyncio.shield(entry.committed)
        if entry.taken:
            return await self._lost_to_another(entry.key, fingerprint)
        live = self._executions.by_id.get(entry.execution_id)
        if live is not None:
            return SubmitResult(live.snapshot(), deduplicated=True)
        snapshot = await self._store.get_execution(entry.execution_id)
        if snapshot is None:
            raise NotFound("execution", entry.execution_id)
        return SubmitResult(snapshot, deduplicated=True)

    async def rerun(self, spec: ExecutionSpec, reused: Mapping[str, Reused], *, submitted_by: str) -> SubmitResult:
        """A new execution of a re-run's spec, the tasks in `reused` already done; room only for the rest."""
        self._check_accepting()
        spec = self._validate(spec, "execution")
        await self._admission.admit(len(spec.tasks) - len(reused), wait=False, timeout_s=None)
        live = self._create(spec, "", submitted_by, reused=reused)
        self._executions.settle(live)
        self._dispatcher.pump_now()
        await self._committer.durable()
        return SubmitResult(live.snapshot(), deduplicated=False)

    def _validate(self, spec: ExecutionSpec, where: str) -> ExecutionSpec:
        """The spec checked (defaults filled in), and the rate limits it names defined on this server."""
        spec = validate_execution_spec(spec, self._limits, where=where)
        for index, task in enumerate(spec.tasks):
            if task.rate_limit and task.rate_limit not in self._rate_limits:
                defined = ", ".join(sorted(self._rate_limits)) or "none"
                raise ValidationError(
                    f"{where}.tasks[{index}].rate_limit",
                    f"this server defines no rate limit {task.rate_limit!r} (it defines: {defined})",
                )
        return spec

    def _create(
        self, spec: ExecutionSpec, fingerprint: str, submitted_by: str, *, reused: Mapping[str, Reused] | None = None
    ) -> LiveExecution:
        """Make the records of a validated, admitted spec and stage them (room is already reserved)."""
        now = self._clock.now()
        execution_id, *task_run_ids = new_ids(1 + len(spec.tasks))
        execution, task_runs = create_execution(
            spec,
            execution_id=execution_id,
            task_run_ids=task_run_ids,
            now=now,
            submitted_by=submitted_by,
            reused=reused,
        )
        live = LiveExecution(execution, {task_run.id: task_run for task_run in task_runs})
        executions = self._executions
        executions.register(live)
        self._committer.stage_new(NewExecution(execution, task_runs, fingerprint))
        self._history.execution_transition(live, now, None, execution)
        if spec.idempotency_key:
            key = spec.idempotency_key
            self._keys[key] = _KeyEntry(key, fingerprint, execution.id, self._committer.durable())
        for task_run in task_runs:
            executions.figures.count(None, task_run, admitted=True)
        if spec.idempotency_key and self._shared_keys:
            # Another replica may commit the key first: nothing of this one is dispatched or timed before its commit.
            self._held[execution.id] = live
            self._committer.after_commit(lambda: self._release(live))
        else:
            self._start(live)
        self._committer.after_commit(lambda: self._cold.maybe_freeze(live))
        return live

    def _start(self, live: LiveExecution) -> None:
        """Its pending task runs into their queues; its timers armed."""
        for task_run in live.task_runs.values():
            if task_run.state is State.PENDING:
                self._executions.queue(live, task_run)
        self._executions.arm_execution_timers(live.execution)

    def _release(self, live: LiveExecution) -> None:
        """A held execution's commit is durable: it starts, unless its key was taken (`key_taken`)."""
        if self._held.pop(live.execution.id, None) is not None:
            self._start(live)
            self._dispatcher.schedule_pump()

    def key_taken(self, execution_id: str) -> bool:
        """Another replica committed the key of a new execution of this one first: the execution, held out of
        dispatch, leaves memory and is never written; its submitters are answered with the other
        (`_lost_to_another`). False for one that was not held (it cannot be let go of: the commit fails)."""
        live = self._held.pop(execution_id, None)
        if live is None:
            return False
        self._executions.forget(live)
        for task_run in live.task_runs.values():
            self._executions.figures.uncount_given(task_run.handler, task_run.state)
        entry = self._keys.get(live.execution.idempotency_key)
        if entry is not None and entry.execution_id == execution_id:
            entry.taken = True  # for the repeats of the submit that wait on it
        self.forget_key(live.execution)  # the next submit of the key finds the other execution in the store
        live.key_taken = True
        return True

    async def _lost_to_another(self, key: str, fingerprint: str) -> SubmitResult:
        """The answer of a submit whose key another replica took first: that replica's execution, as a repeat."""
        entry = await self._lookup_key(key)
        if entry is None:  # deleted since by retention: gone, as it would be for a repeat of the submit
            raise NotFound("execution", f"made for idempotency key {key!r}")
        return await self._deduplicate(entry, fingerprint)

    def forget_key(self, execution: Execution) -> None:
        """The execution left memory (finished, or handed to another replica): its key is answered from the
        store from now on."""
        key = execution.idempotency_key
        if key and (entry := self._keys.get(key)) is not None and entry.execution_id == execution.id:
            del self._keys[key]
