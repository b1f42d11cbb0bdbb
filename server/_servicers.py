"""The TaskService's thin gRPC adapter: check request fields, convert with `taskwire.server.wire`, call
the engine (the worker stream's adapter is `_worker_servicer`).

No state changes here. Every taskwire error becomes a gRPC status in one place
(`_translate_errors`), and every unary call runs under a server-side deadline.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import grpc

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc

from . import _schedule_wire as swire
from . import wire
from ._audit import audit
from ._auth import Caller, current_caller, submit_charge
from ._config import ServerConfig
from ._edge import Malformed, RejectionLog, time_left
from ._submit_stream import SubmitStream
from ._wait_wire import wait_ids, wait_responses
from .domain import ExecutionSpec, NotFound, Schedule, TaskwireError, ValidationError
from .engine import Engine, SubmitItem, SubmitResult, WorkerView

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
ServicerT = TypeVar("ServicerT", bound="TaskService")
Context = grpc.aio.ServicerContext[Any, Any]

MAX_BATCH = 1000
# The role GetIdentity reports for a caller the server did not authenticate (no authentication configured).
ANONYMOUS_ROLE = "admin"
MAX_CANCEL_REASON = 1024  # also a drain's reason
# A wait-for-room submit answers this much before the caller's deadline so that the caller
# gets taskwire's DEADLINE_EXCEEDED (with its message) rather than its own channel's.
_DEADLINE_MARGIN_S = 0.05
_ADMISSION_MODES = frozenset(tpb.AdmissionMode.values())  # `values()` builds a list at each call


def _translate_errors(
    method: Callable[[ServicerT, RequestT, Context], Awaitable[ResponseT]],
) -> Callable[[ServicerT, RequestT, Context], Awaitable[ResponseT]]:
    """Run a unary method under the server's deadline and map taskwire errors to statuses."""

    @functools.wraps(method)
    async def wrapper(self: ServicerT, request: RequestT, context: Context) -> ResponseT:
        try:
            if isinstance(request, Malformed):
                raise self.malformed(request, method.__name__, context)
            async with asyncio.timeout(self.budget_s(context)):
                return await method(self, request, context)
        except TaskwireError as error:
            await context.abort(wire.status_for(error), error.message)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the call did not finish within its deadline")
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


def _submit_item(spec: tpb.ExecutionSpec, where: str, submitter: str) -> SubmitItem:
    """One item of a batch: a spec whose values do not convert fails alone, not the whole batch."""
    try:
        return SubmitItem(wire.execution_spec_from_proto(spec, where), fingerprint(spec, submitter))
    except ValidationError as error:
        return SubmitItem(None, "", error)


def _required(value: str, field: str) -> str:
    if not value:
        raise ValidationError(field, "required")
    return value


def fingerprint(spec: tpb.ExecutionSpec, submitter: str = "") -> str:
    """Identifies a request for idempotency: the same key with another fingerprint is a conflict. The
    submitting identity is part of it: another identity's request with the same key is not a repeat.

    Empty for a request without a key: nothing will ever compare it, so it is not worth a hash.
    """
    if not spec.idempotency_key:
        return ""
    if spec.trace_context:  # who asked, and in which trace, does not make it another request
        spec = tpb.ExecutionSpec.FromString(spec.SerializeToString())
        spec.ClearField("trace_context")
    digest = hashlib.sha256(spec.SerializeToString(deterministic=True))
    if submitter:
        digest.update(b"\0submitted by " + submitter.encode())
    return digest.hexdigest()


def _owned(execution_id: str, submitted_by: str, caller: Caller, method: str) -> None:
    """A caller limited to its own executions finds no other: NOT_FOUND, as for an id that does not exist
    (an execution id reveals nothing to whom it does not belong). Audited as a refusal."""
    owner = caller.owner
    if owner is not None and submitted_by != owner:
        audit(
            "denied",
            identity=caller.identity,
            method=method,
            target=execution_id,
            role=caller.role,
            code="NOT_FOUND",
            reason="the execution belongs to another identity",
        )
        raise NotFound("execution", execution_id)


class TaskService(task_service_pb2_grpc.TaskServiceServicer):
    def __init__(self, *, engine: Engine, config: ServerConfig, rejections: RejectionLog) -> None:
        self._engine = engine
        self._config = config
        self._rejections = rejections

    def malformed(self, request: Malformed, method: str, context: Context) -> ValidationError:
        """The refusal of request bytes that did not parse, logged (rate-limited) once."""
        refusal = request.refusal()
        self._rejections.rejected(method, context.peer(), "%s", refusal.message)
        return refusal

    def budget_s(self, context: Context) -> float:
        """The time a unary call may take: the caller's deadline, capped by the server's."""
        budget = self._config.default_rpc_timeout.total_seconds()
        remaining = time_left(context)
        return min(budget, remaining) if remaining is not None else budget

    async def _check_owner(self, execution_id: str, method: str) -> None:
        """NOT_FOUND, before anything is done, when the caller may touch its own executions only and this
        one is another identity's."""
        caller = current_caller()
        if caller.owner is not None:
            snapshot = await self._engine.get(execution_id)
            _owned(execution_id, snapshot.execution.submitted_by, caller, method)

    def _admission(self, mode: int, budget_s: float) -> tuple[bool, float]:
        if mode not in _ADMISSION_MODES:
            raise ValidationError("admission", f"unknown admission mode {mode}")
        return mode == tpb.ADMISSION_MODE_WAIT_FOR_ROOM, max(budget_s - _DEADLINE_MARGIN_S, 0.0)

    async def submit_one(
        self, request: tpb.SubmitExecutionRequest, budget_s: float, response: tpb.SubmitExecutionResponse
    ) -> None:
        """One submit, as a SubmitExecution call or a submit of a stream makes it, within `budget_s`; its answer
        is filled into `response` (the call's own, or a stream answer's field: not copied there), once done."""
        if not request.HasField("execution"):
            raise ValidationError("execution", "required")
        wait, timeout_s = self._admission(request.admission, budget_s)
        submitter = current_caller().identity
        result = await self._engine.submit(
            wire.execution_spec_from_proto(request.execution),
            fingerprint=fingerprint(request.execution, submitter),
            wait_for_room=wait,
            timeout_s=timeout_s,
            submitted_by=submitter,
        )
        self._answered(response, result)

    async def submit_each(
        self, requests: Sequence[tpb.SubmitExecutionRequest], responses: Sequence[tpb.SubmitExecutionResponse]
    ) -> list[TaskwireError | None]:
        """What `submit_one` does for each request, made together: for requests with an execution, no idempotency
        key and no wait for room (a stream's submits that arrived together). Each is parsed, validated and admitted
        on its own; the new executions are dispatched in one pass and committed together. Fills the response of
        each that is accepted; returns, per request, None or the error that refused it alone."""
        errors: list[TaskwireError | None] = [None] * len(requests)
        specs: list[ExecutionSpec] = []
        places: list[int] = []
        for index, request in enumerate(requests):
            try:
                specs.append(wire.execution_spec_from_proto(request.execution))
            except TaskwireError as error:
                errors[index] = error
            else:
                places.append(index)
        results = await self._engine.submit_each(specs, submitted_by=current_caller().identity)
        for index, result in zip(places, results, strict=True):
            if isinstance(result, TaskwireError):
                errors[index] = result
            else:
                self._answered(responses[index], result)
        return errors

    def _answered(self, response: tpb.SubmitExecutionResponse, result: SubmitResult) -> None:
        snapshot = result.snapshot
        unserved = self._engine.unserved(task_run.handler for task_run in snapshot.task_runs)
        wire.fill_execution(response.execution, snapshot.execution, snapshot.task_runs)
        response.deduplicated = result.deduplicated
        response.unserved_handlers.extend(unserved)

    @_translate_errors
    async def SubmitExecution(
        self, request: tpb.SubmitExecutionRequest, context: Context
    ) -> tpb.SubmitExecutionResponse:
        response = tpb.SubmitExecutionResponse()
        await self.submit_one(request, self.budget_s(context), response)
        return response

    async def StreamSubmits(  # type: ignore[override]
        self, request_iterator: AsyncIterator[tpb.StreamSubmitsRequest | Malformed], context: Context
    ) -> None:
        stream = SubmitStream(
            submit_one=self.submit_one,
            submit_each=self.submit_each,
            budget_s=self._config.default_rpc_timeout.total_seconds(),
            charge=submit_charge(),
            max_message_bytes=self._config.max_message_bytes,
        )
        refusal = await stream.serve(context)
        if refusal is not None:
            self._rejections.rejected("StreamSubmits", context.peer(), "%s", refusal.message)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal.message)

    @_translate_errors
    async def SubmitExecutions(
        self, request: tpb.SubmitExecutionsRequest, context: Context
    ) -> tpb.SubmitExecutionsResponse:
        if not request.executions:
            raise ValidationError("executions", "at least one execution is required")
        if len(request.executions) > MAX_BATCH:
            raise ValidationError("executions", f"at most {MAX_BATCH} per call, got {len(request.executions)}")
        wait, timeout_s = self._admission(request.admission, self.budget_s(context))
        submitter = current_caller().identity
        items = [_submit_item(spec, f"executions[{index}]", submitter) for index, spec in enumerate(request.executions)]
        results = await self._engine.submit_many(items, wait_for_room=wait, timeout_s=timeout_s, submitted_by=submitter)
        response = tpb.SubmitExecutionsResponse()
        unserved = set(self._engine.unserved({task.handler for spec in request.executions for task in spec.tasks}))
        for spec, result in zip(request.executions, results, strict=True):
            code, message = wire.submit_result_error(result.error) if result.error else ("", "")
            response.results.add(
                execution_id=result.execution_id,
                deduplicated=result.deduplicated,
                error_code=code,
                error_message=message,
                unserved_handlers=sorted({task.handler for task in spec.tasks} & unserved) if unserved else (),
            )
        return response

    @_translate_errors
    async def GetExecution(self, request: tpb.GetExecutionRequest, context: Context) -> tpb.GetExecutionResponse:
        snapshot = await self._engine.get(_required(request.execution_id, "execution_id"))
        _owned(request.execution_id, snapshot.execution.submitted_by, current_caller(), "GetExecution")
        return tpb.GetExecutionResponse(execution=wire.execution_to_proto(snapshot.execution, snapshot.task_runs))

    @_translate_errors
    async def ListExecutions(self, request: tpb.ListExecutionsRequest, context: Context) -> tpb.ListExecutionsResponse:
        states = wire.states_from_proto(request.states)
        page_size = wire.page_size(request.page_size)
        while True:
            page = await self._engine.list_executions(
                states=states,
                handler=request.handler,
                page_size=page_size,
                page_token=request.page_token,
                submitted_by=current_caller().owner,
            )
            executions = [wire.execution_to_proto(s.execution, s.task_runs) for s in page.snapshots]
            fitting = wire.fitting(executions, wire.PAGE_BUDGET_BYTES)
            if fitting == len(executions):
                return tpb.ListExecutionsResponse(executions=executions, next_page_token=page.next_page_token)
            # A page of large executions would pass the message limit: ask again for as many as fit,
            # so that the next page token continues right after the last one sent.
            page_size = fitting

    @_translate_errors
    async def CancelExecution(
        self, request: tpb.CancelExecutionRequest, context: Context
    ) -> tpb.CancelExecutionResponse:
        execution_id = _required(request.execution_id, "execution_id")
        if len(request.reason) > MAX_CANCEL_REASON:
            raise ValidationError("reason", f"at most {MAX_CANCEL_REASON} characters")
        await self._check_owner(execution_id, "CancelExecution")
        snapshot, already_terminal = await self._engine.cancel(execution_id, request.reason)
        return tpb.CancelExecutionResponse(
            execution=wire.execution_to_proto(snapshot.execution, snapshot.task_runs),
            already_terminal=already_terminal,
        )

    async def WatchExecution(
        self, request: tpb.WatchExecutionRequest | Malformed, context: Context
    ) -> AsyncIterator[tpb.WatchExecutionResponse]:
        try:
            if isinstance(request, Malformed):
                raise self.malformed(request, "WatchExecution", context)
            execution_id = _required(request.execution_id, "execution_id")
            await self._check_owner(execution_id, "WatchExecution")
            async for record in self._engine.watch(execution_id, request.after_sequence):
                response = tpb.WatchExecutionResponse()
                response.event.ParseFromString(record.body)
                yield response
        except TaskwireError as error:
            await context.abort(wire.status_for(error), error.message)

    async def WaitExecutions(
        self, request: tpb.WaitExecutionsRequest | Malformed, context: Context
    ) -> AsyncIterator[tpb.WaitExecutionsResponse]:
        try:
            if isinstance(request, Malformed):
                raise self.malformed(request, "WaitExecutions", context)
            execution_ids = wait_ids(request.execution_ids)
            # End the stream with taskwire's DEADLINE_EXCEEDED shortly before the caller's deadline.
            remaining = time_left(context)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(remaining - _DEADLINE_MARGIN_S, 0.0) if remaining is not None else None
            batches = self._engine.wait_ends(execution_ids, owner=current_caller().owner)
            async for response in wait_responses(batches, total=len(execution_ids), deadline=deadline):
                yield response
        except TaskwireError as error:
            await context.abort(wire.status_for(error), error.message)

    async def WatchEvents(
        self, request: tpb.WatchEventsRequest | Malformed, context: Context
    ) -> AsyncIterator[tpb.WatchEventsResponse]:
        try:
            if isinstance(request, Malformed):
                raise self.malformed(request, "WatchEvents", context)
            states = wire.states_from_proto(request.states)
            async for record in self._engine.watch_all(handler=request.handler, states=states):
                response = tpb.WatchEventsResponse()
                response.event.ParseFromString(record.body)
                yield response
        except TaskwireError as error:
            await context.abort(wire.status_for(error), error.message)

    @_translate_errors
    async def GetIdentity(self, request: tpb.GetIdentityRequest, context: Context) -> tpb.GetIdentityResponse:
        caller = current_caller()
        # Without authentication every caller is anonymous and may do everything.
        role = caller.role.value if caller.role is not None else ANONYMOUS_ROLE
        return tpb.GetIdentityResponse(name=caller.identity, role=role)

    @_translate_errors
    async def GetStats(self, request: tpb.GetStatsRequest, context: Context) -> tpb.GetStatsResponse:
        stats = self._engine.stats()
        queue = stats.queue
        return tpb.GetStatsResponse(
            queue=tpb.QueueStats(
                size=queue.size,
                capacity=queue.capacity,
                full=queue.full,
                empty=queue.empty,
                waiting_submitters=queue.waiting_submitters,
            ),
            in_flight=stats.in_flight,
            connected_workers=stats.connected_workers,
            free_slots=stats.free_slots,
            handlers=[
                tpb.HandlerStats(
                    handler=h.handler,
                    pending=h.pending,
                    in_flight=h.in_flight,
                    free_slots=h.free_slots,
                    workers=h.workers,
                    oldest_queued_at=wire.timestamp_to_proto(h.oldest_queued_at),
                )
                for h in stats.handlers
            ],
            concurrency_keys=[
                tpb.ConcurrencyKeyStats(key=k.key, limit=k.limit, running=k.running, queued=k.queued, waiting=k.waiting)
                for k in stats.concurrency_keys
            ],
            rate_limits=[
                tpb.RateLimitStats(
                    name=r.name,
                    rate_per_s=r.rate_per_s,
                    burst=r.burst,
                    tokens=r.tokens,
                    reserved=r.reserved,
                    waiting=r.waiting,
                )
                for r in stats.rate_limits
            ],
        )

    @_translate_errors
    async def ListWorkers(self, request: tpb.ListWorkersRequest, context: Context) -> tpb.ListWorkersResponse:
        return tpb.ListWorkersResponse(workers=self._worker_infos(await self._engine.list_workers()))

    @_translate_errors
    async def DeleteExecution(
        self, request: tpb.DeleteExecutionRequest, context: Context
    ) -> tpb.DeleteExecutionResponse:
        await self._engine.delete(_required(request.execution_id, "execution_id"))
        return tpb.DeleteExecutionResponse()

    @_translate_errors
    async def RerunExecution(self, request: tpb.RerunExecutionRequest, context: Context) -> tpb.RerunExecutionResponse:
        execution_id = _required(request.execution_id, "execution_id")
        await self._check_owner(execution_id, "RerunExecution")
        result = await self._engine.rerun(
            execution_id, only_failed=request.only_failed, submitted_by=current_caller().identity
        )
        snapshot = result.snapshot
        return tpb.RerunExecutionResponse(execution=wire.execution_to_proto(snapshot.execution, snapshot.task_runs))

    @_translate_errors
    async def CancelExecutions(
        self, request: tpb.CancelExecutionsRequest, context: Context
    ) -> tpb.CancelExecutionsResponse:
        if len(request.reason) > MAX_CANCEL_REASON:
            raise ValidationError("reason", f"at most {MAX_CANCEL_REASON} characters")
        selection = wire.execution_filter_from_proto(request.filter)
        result = await self._engine.cancel_matching(selection, reason=request.reason, dry_run=request.dry_run)
        return tpb.CancelExecutionsResponse(matched=result.matched, cancelled=result.changed)

    @_translate_errors
    async def DeleteExecutions(
        self, request: tpb.DeleteExecutionsRequest, context: Context
    ) -> tpb.DeleteExecutionsResponse:
        selection = wire.execution_filter_from_proto(request.filter)
        result = await self._engine.delete_matching(selection, dry_run=request.dry_run)
        return tpb.DeleteExecutionsResponse(matched=result.matched, deleted=result.changed, skipped=result.skipped)

    @_translate_errors
    async def DrainWorker(self, request: tpb.DrainWorkerRequest, context: Context) -> tpb.DrainWorkerResponse:
        grace = wire.optional_duration(request, "grace")
        if grace is not None and grace < timedelta(0):
            raise ValidationError("grace", "must not be negative")
        if len(request.reason) > MAX_CANCEL_REASON:
            raise ValidationError("reason", f"at most {MAX_CANCEL_REASON} characters")
        told = await self._engine.drain_worker(
            name=request.name, session_id=request.session_id, grace=grace, reason=request.reason
        )
        return tpb.DrainWorkerResponse(workers=self._worker_infos(told))

    # ---- Schedules ------------------------------------------------------------------------------

    def _schedule(self, schedule: Schedule, next_fire_times: int) -> tpb.Schedule:
        upcoming = self._engine.schedules.next_fire_times(schedule, next_fire_times)
        return swire.schedule_to_proto(schedule, upcoming)

    @_translate_errors
    async def CreateSchedule(self, request: tpb.CreateScheduleRequest, context: Context) -> tpb.CreateScheduleResponse:
        if not request.HasField("schedule"):
            raise ValidationError("schedule", "required")
        schedule = await self._engine.schedules.create(swire.schedule_spec_from_proto(request.schedule))
        return tpb.CreateScheduleResponse(schedule=self._schedule(schedule, 5))

    @_translate_errors
    async def ListSchedules(self, request: tpb.ListSchedulesRequest, context: Context) -> tpb.ListSchedulesResponse:
        count = swire.next_fire_count(request.next_fire_times, 1)
        return tpb.ListSchedulesResponse(
            schedules=[self._schedule(schedule, count) for schedule in self._engine.schedules.all()]
        )

    @_translate_errors
    async def GetSchedule(self, request: tpb.GetScheduleRequest, context: Context) -> tpb.GetScheduleResponse:
        count = swire.next_fire_count(request.next_fire_times, 5)
        schedule = self._engine.schedules.get(_required(request.name, "name"))
        return tpb.GetScheduleResponse(schedule=self._schedule(schedule, count))

    @_translate_errors
    async def PauseSchedule(self, request: tpb.PauseScheduleRequest, context: Context) -> tpb.PauseScheduleResponse:
        schedule = await self._engine.schedules.pause(_required(request.name, "name"))
        return tpb.PauseScheduleResponse(schedule=self._schedule(schedule, 5))

    @_translate_errors
    async def ResumeSchedule(self, request: tpb.ResumeScheduleRequest, context: Context) -> tpb.ResumeScheduleResponse:
        schedule = await self._engine.schedules.resume(_required(request.name, "name"))
        return tpb.ResumeScheduleResponse(schedule=self._schedule(schedule, 5))

    @_translate_errors
    async def DeleteSchedule(self, request: tpb.DeleteScheduleRequest, context: Context) -> tpb.DeleteScheduleResponse:
        await self._engine.schedules.delete(_required(request.name, "name"))
        return tpb.DeleteScheduleResponse()

    @_translate_errors
    async def TriggerSchedule(
        self, request: tpb.TriggerScheduleRequest, context: Context
    ) -> tpb.TriggerScheduleResponse:
        schedule, execution_id = await self._engine.schedules.trigger(_required(request.name, "name"))
        return tpb.TriggerScheduleResponse(schedule=self._schedule(schedule, 5), execution_id=execution_id)

    def _worker_infos(self, workers: list[WorkerView]) -> list[tpb.WorkerInfo]:
        lease_timeout = wire.duration_to_proto(self._config.lease_timeout)
        return [
            tpb.WorkerInfo(
                session_id=worker.session_id,
                instance_id=worker.instance_id,
                name=worker.name,
                handlers=worker.handlers,
                slots=worker.slots,
                in_flight=worker.in_flight,
                labels=worker.labels,
                agent_version=worker.agent_version,
                connected_at=wire.timestamp_to_proto(worker.connected_at),
                last_seen_at=wire.timestamp_to_proto(worker.last_seen_at),
                draining=worker.draining,
                lease_timeout=lease_timeout,
                replica=worker.replica,
            )
            for worker in workers
        ]
