"""`AsyncClient`: the asyncio SDK over grpc.aio, the same calls as `Client`."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio
import tenacity

from taskwire.common import (
    DEFAULT_CATCH_UP_WINDOW,
    ExecutionFilter,
    ExecutionSpec,
    OverlapPolicy,
    RetryPolicy,
    ScheduleSpec,
    State,
    Stats,
    TaskwireError,
    Unimplemented,
    bearer,
)
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc

from . import _common as c
from . import _schedules as s
from . import _streams as st
from ._all_events import event_of, events_request, identity_from_proto
from ._errors import WaitTimeout, error_from_rpc
from ._events import WatchEvent
from ._models import BulkResult, ExecutionSnapshot, Identity, RpcRetry, SubmitResult, WorkerInfo
from ._schedules import ScheduleInfo
from ._submit_stream import AsyncSubmitStream, fits_the_stream

Request = TypeVar("Request")
Response = TypeVar("Response")


class AsyncClient:
    """An asyncio client of a taskwire server (grpc.aio). Create it inside the event loop that uses it.

    `address` may name several servers, as `Client`'s may.

    async with AsyncClient("127.0.0.1:50051") as client:
        execution = await client.submit("echo", {"hello": "world"})
        print(await client.wait(execution.id))
    """

    def __init__(
        self,
        address: str | Sequence[str] = c.DEFAULT_ADDRESS,
        *,
        timeout: timedelta = c.DEFAULT_TIMEOUT,
        retry: RpcRetry | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        token: str | None = None,
    ) -> None:
        target = c.channel_target(address)  # ValueError for no address, or several it cannot list
        self._address = address if isinstance(address, str) else ",".join(address)
        self._timeout = c.call_timeout(timeout)  # refused now rather than at the first call
        c.check_credentials(token, credentials)
        self._retry = retry or RpcRetry()
        channel_options = [*c.CHANNEL_OPTIONS, *options]
        interceptors = bearer.aio_interceptors(token)
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=channel_options, interceptors=interceptors)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options=channel_options, interceptors=interceptors)
        )
        self._stub = task_service_pb2_grpc.TaskServiceStub(self._channel)
        self._submits = AsyncSubmitStream(lambda: self._stub.StreamSubmits(), self._address)
        self._streamed = True  # False once the server turned out not to know StreamSubmits
        self._closed = False

    @property
    def address(self) -> str:
        return self._address

    async def close(self) -> None:
        """Close the channel; idempotent. Submits in flight are answered first (for up to 2 s); other calls in
        progress, and submits still unanswered then, are cancelled (asyncio.CancelledError)."""
        if not self._closed:
            self._closed = True
            try:
                await self._submits.close()
            finally:
                await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- Calls ----------------------------------------------------------------------------------

    async def _unary(
        self,
        method: Callable[..., Awaitable[Response]],
        request: Any,
        *,
        idempotent: bool,
    ) -> Response:
        deadline_s = c.seconds(self._timeout)

        async def once() -> Response:
            try:
                return await method(request, timeout=deadline_s)
            except grpc.RpcError as error:
                raise error_from_rpc(error, address=self._address, deadline_s=deadline_s) from error

        return await self._retrying(once, idempotent=idempotent)

    async def _retrying(self, once: Callable[[], Awaitable[Response]], *, idempotent: bool) -> Response:
        """`once()`, retried per `retry`: the first attempt as a plain call, the others under tenacity."""
        try:
            return await once()
        except TaskwireError as error:
            pause_s = c.first_retry_pause_s(self._retry, error, idempotent=idempotent)
            if pause_s is None:
                raise
        await asyncio.sleep(pause_s)
        async for attempt in tenacity.AsyncRetrying(**c.retry_options(self._retry, idempotent=idempotent, after=1)):
            with attempt:
                return await once()
        raise AssertionError("tenacity stopped without an outcome")  # pragma: no cover

    async def submit(
        self,
        handler: str,
        input: Any = None,
        *,
        task_id: str | None = None,
        timeout: timedelta | None = None,  # noqa: ASYNC109 - the task's timeout, sent to the server
        max_attempts: int | None = None,
        max_infrastructure_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        key: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        execution_timeout: timedelta | None = None,
        not_before: datetime | None = None,
        schedule_to_start_timeout: timedelta | None = None,
        priority: int | None = None,
        concurrency_key: str = "",
        concurrency_limit: int = 0,
        fairness_key: str = "",
        rate_limit: str = "",
        rate_limit_key: str = "",
        wait_for_room: bool = False,
    ) -> ExecutionSnapshot:
        """Submit an execution of one task; see `Client.submit`."""
        spec = c.single_task_spec(
            handler,
            input,
            task_id=task_id or "",
            timeout=timeout,
            max_attempts=max_attempts,
            max_infrastructure_retries=max_infrastructure_retries,
            retry_policy=retry_policy,
            key=key,
            name=name,
            metadata=metadata,
            execution_timeout=execution_timeout,
            not_before=not_before,
            schedule_to_start_timeout=schedule_to_start_timeout,
            priority=priority,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            fairness_key=fairness_key,
            rate_limit=rate_limit,
            rate_limit_key=rate_limit_key,
        )
        return await self.submit_execution(spec, wait_for_room=wait_for_room)

    async def submit_execution(self, spec: ExecutionSpec, *, wait_for_room: bool = False) -> ExecutionSnapshot:
        """Submit an execution of one or more tasks; returns it as stored."""
        request = c.submit_request(spec, wait_for_room=wait_for_room)
        idempotent = c.submit_is_idempotent([spec])
        if self._streamed and fits_the_stream(request):
            try:
                return c.submitted(await self._streamed_submit(request, idempotent=idempotent))
            except Unimplemented:
                self._streamed = False  # a server from before StreamSubmits: unary calls from now on
        response: tpb.SubmitExecutionResponse = await self._unary(
            self._stub.SubmitExecution, request, idempotent=idempotent
        )
        return c.submitted(response)

    async def _streamed_submit(
        self, request: tpb.SubmitExecutionRequest, *, idempotent: bool
    ) -> tpb.SubmitExecutionResponse:
        """One submit on the client's submit stream, retried as its unary call would be."""
        deadline_s = c.seconds(self._timeout)
        return await self._retrying(lambda: self._submits.submit(request, deadline_s), idempotent=idempotent)

    async def submit_many(
        self, specs: Iterable[ExecutionSpec], *, wait_for_room: bool = False
    ) -> builtins.list[SubmitResult]:
        """Submit many executions in one call; one result per spec, in order (an id, or the item's error)."""
        specs = tuple(specs)
        response: tpb.SubmitExecutionsResponse = await self._unary(
            self._stub.SubmitExecutions,
            c.submit_many_request(specs, wait_for_room=wait_for_room),
            idempotent=c.submit_is_idempotent(specs),
        )
        return c.submit_results(response)

    async def get(self, execution_id: str) -> ExecutionSnapshot:
        response: tpb.GetExecutionResponse = await self._unary(
            self._stub.GetExecution, c.request(tpb.GetExecutionRequest, execution_id=execution_id), idempotent=True
        )
        return c.snapshot(response.execution)

    async def cancel(self, execution_id: str, reason: str = "") -> ExecutionSnapshot:
        response: tpb.CancelExecutionResponse = await self._unary(
            self._stub.CancelExecution,
            c.request(tpb.CancelExecutionRequest, execution_id=execution_id, reason=reason),
            idempotent=True,
        )
        return c.snapshot(response.execution)

    async def stats(self) -> Stats:
        response: tpb.GetStatsResponse = await self._unary(self._stub.GetStats, tpb.GetStatsRequest(), idempotent=True)
        return c.stats_from_proto(response)

    async def workers(self) -> builtins.list[WorkerInfo]:
        response: tpb.ListWorkersResponse = await self._unary(
            self._stub.ListWorkers, tpb.ListWorkersRequest(), idempotent=True
        )
        return c.workers_from_proto(response)

    async def rerun(self, execution_id: str, *, only_failed: bool = False) -> ExecutionSnapshot:
        """A new execution with the spec of a finished one (labelled `taskwire.rerun_of`); with `only_failed`,
        the tasks that succeeded keep their outputs and are not run again. Not retried once it may have been
        sent (it would make a second execution)."""
        request = c.request(tpb.RerunExecutionRequest, execution_id=execution_id, only_failed=only_failed)
        response: tpb.RerunExecutionResponse = await self._unary(self._stub.RerunExecution, request, idempotent=False)
        return c.snapshot(response.execution)

    async def cancel_matching(
        self, selection: ExecutionFilter, *, reason: str = "", dry_run: bool = False
    ) -> BulkResult:
        """Cancel every execution that `selection` matches and has not ended (it needs a condition at least).
        With `dry_run`, only count. Not retried after it may have been sent."""
        request = c.cancel_matching_request(selection, reason=reason, dry_run=dry_run)
        return c.bulk_result(await self._unary(self._stub.CancelExecutions, request, idempotent=dry_run))

    async def delete_matching(self, selection: ExecutionFilter, *, dry_run: bool = False) -> BulkResult:
        """Delete every finished execution that `selection` matches (those not ended are skipped and counted).
        With `dry_run`, only count."""
        request = c.delete_matching_request(selection, dry_run=dry_run)
        return c.bulk_result(await self._unary(self._stub.DeleteExecutions, request, idempotent=dry_run))

    async def delete(self, execution_id: str) -> None:
        """Delete a finished execution with its task runs, history and idempotency key. FailedPrecondition
        (InvalidTransition) naming its state when it is not finished; NotFound when there is none (a retry
        of a delete that went through finds nothing, so it is not retried after it may have been sent)."""
        await self._unary(
            self._stub.DeleteExecution,
            c.request(tpb.DeleteExecutionRequest, execution_id=execution_id),
            idempotent=False,
        )

    async def drain_worker(
        self, name: str = "", *, session_id: str = "", grace: timedelta | None = None, reason: str = ""
    ) -> builtins.list[WorkerInfo]:
        """Drain a connected worker (by name, session id, or both): it takes nothing new, finishes what
        it runs within `grace` (None: its own drain timeout) and disconnects. Returns the sessions told;
        NotFound when no connected worker matches."""
        request = c.drain_request(name, session_id=session_id, grace=grace, reason=reason)
        response: tpb.DrainWorkerResponse = await self._unary(self._stub.DrainWorker, request, idempotent=True)
        return c.workers_from_proto(response)

    # ---- Schedules ------------------------------------------------------------------------------

    async def create_schedule(
        self,
        name: str,
        cron: str,
        handler: str,
        input: Any = None,
        *,
        timezone: str = "UTC",
        catch_up_window: timedelta = DEFAULT_CATCH_UP_WINDOW,
        overlap: OverlapPolicy | str = OverlapPolicy.SKIP,
        paused: bool = False,
        **task: Any,
    ) -> ScheduleInfo:
        """Create a schedule that starts one task running `handler` on `input` at each time `cron` names (five
        fields, or six with seconds first) in `timezone`. `task` takes the options of `submit` that describe
        the task (timeout, max_attempts, retry_policy, metadata, execution_timeout, ...; `execution_name`
        names the executions). AlreadyExists when a schedule has that name; ValidationError naming the field
        for a bad cron expression or time zone."""
        spec = s.schedule_spec(
            name,
            cron,
            handler,
            input,
            timezone=timezone,
            catch_up_window=catch_up_window,
            overlap=overlap,
            paused=paused,
            **task,
        )
        return await self.create_schedule_spec(spec)

    async def create_schedule_spec(self, spec: ScheduleSpec) -> ScheduleInfo:
        """Create a schedule from a full spec (any execution spec, several tasks included)."""
        response: tpb.CreateScheduleResponse = await self._unary(
            self._stub.CreateSchedule, s.create_request(spec), idempotent=False
        )
        return s.schedule_from_proto(response.schedule)

    async def schedules(self, *, next_fire_times: int = 1) -> builtins.list[ScheduleInfo]:
        """Every schedule, by name, each with its next `next_fire_times` fire times."""
        request = c.request(tpb.ListSchedulesRequest, next_fire_times=next_fire_times)
        response: tpb.ListSchedulesResponse = await self._unary(self._stub.ListSchedules, request, idempotent=True)
        return [s.schedule_from_proto(schedule) for schedule in response.schedules]

    async def get_schedule(self, name: str, *, next_fire_times: int = 5) -> ScheduleInfo:
        """One schedule with its next fire times; NotFound when there is none."""
        request = c.request(tpb.GetScheduleRequest, name=name, next_fire_times=next_fire_times)
        response: tpb.GetScheduleResponse = await self._unary(self._stub.GetSchedule, request, idempotent=True)
        return s.schedule_from_proto(response.schedule)

    async def pause_schedule(self, name: str) -> ScheduleInfo:
        """Pause a schedule (idempotent): it starts nothing until resumed."""
        response: tpb.PauseScheduleResponse = await self._unary(
            self._stub.PauseSchedule, c.request(tpb.PauseScheduleRequest, name=name), idempotent=True
        )
        return s.schedule_from_proto(response.schedule)

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Resume a schedule (idempotent) from now on; the fire times while it was paused are not made up."""
        response: tpb.ResumeScheduleResponse = await self._unary(
            self._stub.ResumeSchedule, c.request(tpb.ResumeScheduleRequest, name=name), idempotent=True
        )
        return s.schedule_from_proto(response.schedule)

    async def delete_schedule(self, name: str) -> None:
        """Delete a schedule; the executions it started go on. NotFound when there is none."""
        await self._unary(self._stub.DeleteSchedule, c.request(tpb.DeleteScheduleRequest, name=name), idempotent=False)

    async def trigger_schedule(self, name: str) -> str:
        """Start one execution of the schedule now (whatever its overlap policy, even paused); returns its id."""
        response: tpb.TriggerScheduleResponse = await self._unary(
            self._stub.TriggerSchedule, c.request(tpb.TriggerScheduleRequest, name=name), idempotent=False
        )
        return response.execution_id

    async def watch(
        self,
        execution_id: str,
        after_sequence: int = 0,
        *,
        timeout: timedelta | None = None,  # noqa: ASYNC109 - a gRPC deadline, known to the server too
    ) -> AsyncGenerator[WatchEvent, None]:
        """The execution's events in order; see `Client.watch`."""
        cursor = st.WatchCursor(execution_id, after_sequence, timeout, retry=self._retry, address=self._address)
        fetch = tenacity.AsyncRetrying(**cursor.retry_options())
        stream: st.ResumableStream[st.WatchCursor, _Call] = st.ResumableStream(
            lambda request, timeout_s: self._stub.WatchExecution(request, timeout=timeout_s), cursor
        )
        try:
            while True:
                event: WatchEvent | None = await fetch(_next_event, stream)
                if event is None:
                    return
                yield event
        finally:
            stream.close()

    async def watch_events(
        self, *, handler: str = "", states: Iterable[State | str] = ()
    ) -> AsyncGenerator[WatchEvent, None]:
        """Live events of all executions, from now on; see `Client.watch_events`."""
        call = self._stub.WatchEvents(events_request(handler, states))
        try:
            async for response in call:
                yield event_of(response)
        except grpc.RpcError as error:
            raise error_from_rpc(error, address=self._address) from error
        finally:
            call.cancel()

    async def identity(self) -> Identity:
        """Who the server takes this client to be, and its role; see `Client.identity`."""
        response: tpb.GetIdentityResponse = await self._unary(
            self._stub.GetIdentity, tpb.GetIdentityRequest(), idempotent=True
        )
        return identity_from_proto(response)

    async def wait_finished(
        self,
        execution_id: str,
        timeout: timedelta | None = None,  # noqa: ASYNC109 - a gRPC deadline, as in Client.wait_finished
        *,
        on_event: Callable[[WatchEvent], object] | None = None,
    ) -> ExecutionSnapshot:
        """Wait until the execution is terminal and return it, whatever its final state; see `Client.wait_finished`."""
        if on_event is not None and not callable(on_event):
            raise TypeError(
                f"on_event must be a function of one event, got {type(on_event).__name__} {on_event!r:.100}"
            )
        if on_event is None:
            try:
                return (await self.wait_many([execution_id], timeout))[0]
            except Unimplemented:
                on_event = c.ignore_event
        waiter = st.FinishWait(execution_id, timeout, retry=self._retry)
        while True:
            events = self.watch(execution_id, after_sequence=waiter.last, timeout=waiter.watch_timeout())
            try:
                async for event in events:
                    terminal = waiter.seen(event)
                    on_event(event)
                    if terminal:
                        break
            except WaitTimeout:
                raise waiter.timed_out() from None
            finally:
                await events.aclose()
            current = await self.get(execution_id)
            if current.is_terminal:
                return current
            await asyncio.sleep(waiter.next_round())

    async def wait(
        self,
        execution_id: str,
        timeout: timedelta | None = None,  # noqa: ASYNC109 - a gRPC deadline, as in Client.wait
    ) -> Any:
        """The output once the execution succeeds; see `Client.wait`."""
        return c.result_of(await self.wait_finished(execution_id, timeout))

    async def as_completed(
        self,
        execution_ids: Iterable[str],
        timeout: timedelta | None = None,  # noqa: ASYNC109 - a gRPC deadline, as in Client.as_completed
    ) -> AsyncGenerator[ExecutionSnapshot, None]:
        """Each of the executions once it is terminal, as they finish; see `Client.as_completed`."""
        cursor = st.WaitCursor(execution_ids, timeout, retry=self._retry, address=self._address)
        fetch = tenacity.AsyncRetrying(**cursor.retry_options())
        stream: st.ResumableStream[st.WaitCursor, _WaitCall] = st.ResumableStream(
            lambda request, timeout_s: self._stub.WaitExecutions(request, timeout=timeout_s), cursor
        )
        try:
            while cursor.pending:
                batch: builtins.list[ExecutionSnapshot] = await fetch(_next_finished, stream)
                for finished in batch:
                    yield finished
        finally:
            stream.close()

    async def wait_many(
        self,
        execution_ids: Iterable[str],
        timeout: timedelta | None = None,  # noqa: ASYNC109 - a gRPC deadline, as in Client.wait_many
    ) -> builtins.list[ExecutionSnapshot]:
        """Every one of the executions once terminal, in the order given; see `Client.wait_many`."""
        execution_ids = builtins.list(c.many(execution_ids, "execution_ids"))
        finished = {done.id: done async for done in self.as_completed(execution_ids, timeout)}
        return [finished[execution_id] for execution_id in execution_ids]

    async def list(
        self,
        *,
        states: Iterable[State | str] = (),
        handler: str = "",
        limit: int | None = None,
        page_size: int | None = None,
    ) -> AsyncGenerator[ExecutionSnapshot, None]:
        """Executions, newest first, fetched page by page as you iterate; at most `limit` of them."""
        pager = c.ListPager(states=states, handler=handler, limit=limit, page_size=page_size)
        while pager.more:
            response: tpb.ListExecutionsResponse = await self._unary(
                self._stub.ListExecutions, pager.request(), idempotent=True
            )
            for snapshot in pager.page(response):
                yield snapshot

    async def list_page(
        self, *, states: Iterable[State | str] = (), handler: str = "", page_size: int = 50, page_token: str = ""
    ) -> tuple[builtins.list[ExecutionSnapshot], str]:
        """One page of executions, newest first, and the token of the next ("" on the last page)."""
        request = c.list_request(states=states, handler=handler, page_size=page_size, page_token=page_token)
        response: tpb.ListExecutionsResponse = await self._unary(self._stub.ListExecutions, request, idempotent=True)
        return [c.snapshot(message) for message in response.executions], response.next_page_token


_Call = grpc.aio.UnaryStreamCall[tpb.WatchExecutionRequest, tpb.WatchExecutionResponse]


async def _next_event(stream: st.ResumableStream[st.WatchCursor, _Call]) -> WatchEvent | None:
    """The next event not delivered yet; None when the server ended the stream (after the terminal event)."""
    try:
        while (response := await stream.call().read()) is not grpc.aio.EOF:
            assert isinstance(response, tpb.WatchExecutionResponse)
            event = stream.cursor.received(response)
            if event is not None:
                return event
    except grpc.RpcError as error:
        raise stream.broke(error) from error
    return None


_WaitCall = grpc.aio.UnaryStreamCall[tpb.WaitExecutionsRequest, tpb.WaitExecutionsResponse]


async def _next_finished(stream: st.ResumableStream[st.WaitCursor, _WaitCall]) -> builtins.list[ExecutionSnapshot]:
    """The executions of the next message not delivered yet (perhaps none); see the sync `_next_finished`."""
    try:
        response = await stream.call().read()
    except grpc.RpcError as error:
        raise stream.broke(error) from error
    if response is grpc.aio.EOF:
        stream.ended()
        return []
    assert isinstance(response, tpb.WaitExecutionsResponse)
    return stream.cursor.received(response)
