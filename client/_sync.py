"""`Client`: the blocking SDK over the generated TaskService stub."""

from __future__ import annotations

import atexit
import builtins
import gc
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import grpc
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
from ._submit_stream import SubmitStream, fits_the_stream

Request = TypeVar("Request")
Response = TypeVar("Response")

# A failed call raises itself, so its error keeps it in a reference cycle (through the traceback, and whatever
# holds the error) that only the garbage collector frees. Left to the interpreter's last collection, the
# call's finalizer waits for a lock that gRPC's event thread may hold, stopped in the middle of one of the
# call's events as the interpreter stops daemon threads, and the process never exits. Collected at exit
# instead, while gRPC's threads still run.
atexit.register(gc.collect)


class Client:
    """A blocking client of a taskwire server.

    Every unary call has a deadline (`timeout`); idempotent calls retry UNAVAILABLE
    per `retry`. Failed calls raise the taskwire error of their status code.

    `address` may name several servers (`"10.0.0.1:50051,10.0.0.2:50051"`, or a list): an active server and its
    standbys. Calls go to the first that answers; one that is unreachable is skipped (`channel_target`).

        with Client("127.0.0.1:50051") as client:
            execution = client.submit("echo", {"hello": "world"})
            print(client.wait(execution.id))
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
        self._channel = (
            grpc.secure_channel(target, credentials, options=channel_options)
            if credentials is not None
            else grpc.insecure_channel(target, options=channel_options)
        )
        self._stub = task_service_pb2_grpc.TaskServiceStub(bearer.with_token(self._channel, token))
        self._submits = SubmitStream(self._stub.StreamSubmits, self._address)
        self._streamed = True  # False once the server turned out not to know StreamSubmits
        # A client dropped without close() ends its submit stream once collected: else the stream's reader thread
        # would keep the call, and with it the connection and the server's end of the stream, for good. The
        # channel then closes itself once the call has ended (gRPC closes a channel nothing refers to). The
        # finalizer holds nothing that holds the client, and waits for nothing: it runs in whichever thread
        # the garbage collector does. Not at exit, where the interpreter stops the reader thread itself.
        self._finalizer = weakref.finalize(self, self._submits.release)
        self._finalizer.atexit = False

    @property
    def address(self) -> str:
        return self._address

    def close(self) -> None:
        """Close the channel; idempotent. Calls in progress are cancelled."""
        if self._finalizer.detach() is not None:
            self._submits.close()
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- Calls ----------------------------------------------------------------------------------

    def _unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[Request, Response],
        request: Request,
        *,
        idempotent: bool,
    ) -> Response:
        deadline_s = c.seconds(self._timeout)

        def once() -> Response:
            try:
                return method(request, timeout=deadline_s)
            except grpc.RpcError as error:
                raise error_from_rpc(error, address=self._address, deadline_s=deadline_s) from error

        return self._retrying(once, idempotent=idempotent)

    def _retrying(self, once: Callable[[], Response], *, idempotent: bool) -> Response:
        """`once()`, retried per `retry`: the first attempt as a plain call, the others under tenacity."""
        try:
            return once()
        except TaskwireError as error:
            pause_s = c.first_retry_pause_s(self._retry, error, idempotent=idempotent)
            if pause_s is None:
                raise
        time.sleep(pause_s)
        return tenacity.Retrying(**c.retry_options(self._retry, idempotent=idempotent, after=1))(once)

    def submit(
        self,
        handler: str,
        input: Any = None,
        *,
        task_id: str | None = None,
        timeout: timedelta | None = None,
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
        """Submit an execution of one task running `handler` on `input` (any JSON value, or a `Payload`).

        `timeout` limits each attempt, `execution_timeout` the whole execution, `schedule_to_start_timeout`
        each wait for a worker to start it (past it the task fails with SCHEDULE_TO_START_TIMEOUT). `priority`
        (1 lowest to 9 highest, default 5) orders the handler's queue; with `concurrency_key`, at most
        `concurrency_limit` attempts of that key run at once; `fairness_key` (a tenant) takes turns with other
        keys within a priority; `rate_limit` names a rate limit the server defines (`rate_limit_key`: a bucket of
        its own), of which each dispatch takes a token (docs/flow-control.md). `max_attempts` and
        `max_infrastructure_retries` override those of `retry_policy` (default: one attempt, and three
        retries after failures that are not the handler's fault, such as a lost worker). With `key` (an idempotency
        key) the call is retried when the server is unreachable. `wait_for_room` waits for room in a full
        queue (until the client's timeout) instead of failing with QueueFull.
        """
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
        return self.submit_execution(spec, wait_for_room=wait_for_room)

    def submit_execution(self, spec: ExecutionSpec, *, wait_for_room: bool = False) -> ExecutionSnapshot:
        """Submit an execution of one or more tasks; returns it as stored."""
        request = c.submit_request(spec, wait_for_room=wait_for_room)
        idempotent = c.submit_is_idempotent([spec])
        if self._streamed and fits_the_stream(request):
            deadline_s = c.seconds(self._timeout)
            try:
                return c.submitted(
                    self._retrying(lambda: self._submits.submit(request, deadline_s), idempotent=idempotent)
                )
            except Unimplemented:
                self._streamed = False  # a server from before StreamSubmits: unary calls from now on
        response: tpb.SubmitExecutionResponse = self._unary(self._stub.SubmitExecution, request, idempotent=idempotent)
        return c.submitted(response)

    def submit_many(
        self, specs: Iterable[ExecutionSpec], *, wait_for_room: bool = False
    ) -> builtins.list[SubmitResult]:
        """Submit many executions in one call; one result per spec, in order (an id, or the item's error)."""
        specs = tuple(specs)
        response: tpb.SubmitExecutionsResponse = self._unary(
            self._stub.SubmitExecutions,
            c.submit_many_request(specs, wait_for_room=wait_for_room),
            idempotent=c.submit_is_idempotent(specs),
        )
        return c.submit_results(response)

    def get(self, execution_id: str) -> ExecutionSnapshot:
        """The execution with its task runs and attempts; NotFound when there is none."""
        response: tpb.GetExecutionResponse = self._unary(
            self._stub.GetExecution, c.request(tpb.GetExecutionRequest, execution_id=execution_id), idempotent=True
        )
        return c.snapshot(response.execution)

    def cancel(self, execution_id: str, reason: str = "") -> ExecutionSnapshot:
        """Ask for the execution to be cancelled (idempotent). It may still be RUNNING while handlers stop."""
        response: tpb.CancelExecutionResponse = self._unary(
            self._stub.CancelExecution,
            c.request(tpb.CancelExecutionRequest, execution_id=execution_id, reason=reason),
            idempotent=True,
        )
        return c.snapshot(response.execution)

    def stats(self) -> Stats:
        response: tpb.GetStatsResponse = self._unary(self._stub.GetStats, tpb.GetStatsRequest(), idempotent=True)
        return c.stats_from_proto(response)

    def workers(self) -> builtins.list[WorkerInfo]:
        response: tpb.ListWorkersResponse = self._unary(
            self._stub.ListWorkers, tpb.ListWorkersRequest(), idempotent=True
        )
        return c.workers_from_proto(response)

    def rerun(self, execution_id: str, *, only_failed: bool = False) -> ExecutionSnapshot:
        """A new execution with the spec of a finished one (labelled `taskwire.rerun_of`); with `only_failed`,
        the tasks that succeeded keep their outputs and are not run again. Not retried once it may have been
        sent (it would make a second execution)."""
        request = c.request(tpb.RerunExecutionRequest, execution_id=execution_id, only_failed=only_failed)
        response: tpb.RerunExecutionResponse = self._unary(self._stub.RerunExecution, request, idempotent=False)
        return c.snapshot(response.execution)

    def cancel_matching(self, selection: ExecutionFilter, *, reason: str = "", dry_run: bool = False) -> BulkResult:
        """Cancel every execution that `selection` matches and has not ended (it needs a condition at least).
        With `dry_run`, only count. Not retried after it may have been sent."""
        request = c.cancel_matching_request(selection, reason=reason, dry_run=dry_run)
        return c.bulk_result(self._unary(self._stub.CancelExecutions, request, idempotent=dry_run))

    def delete_matching(self, selection: ExecutionFilter, *, dry_run: bool = False) -> BulkResult:
        """Delete every finished execution that `selection` matches (those not ended are skipped and counted).
        With `dry_run`, only count."""
        request = c.delete_matching_request(selection, dry_run=dry_run)
        return c.bulk_result(self._unary(self._stub.DeleteExecutions, request, idempotent=dry_run))

    def delete(self, execution_id: str) -> None:
        """Delete a finished execution with its task runs, history and idempotency key. FailedPrecondition
        (InvalidTransition) naming its state when it is not finished; NotFound when there is none (a retry
        of a delete that went through finds nothing, so it is not retried after it may have been sent)."""
        self._unary(
            self._stub.DeleteExecution,
            c.request(tpb.DeleteExecutionRequest, execution_id=execution_id),
            idempotent=False,
        )

    def drain_worker(
        self, name: str = "", *, session_id: str = "", grace: timedelta | None = None, reason: str = ""
    ) -> builtins.list[WorkerInfo]:
        """Drain a connected worker (by name, session id, or both): it takes nothing new, finishes what
        it runs within `grace` (None: its own drain timeout) and disconnects. Returns the sessions told;
        NotFound when no connected worker matches."""
        request = c.drain_request(name, session_id=session_id, grace=grace, reason=reason)
        response: tpb.DrainWorkerResponse = self._unary(self._stub.DrainWorker, request, idempotent=True)
        return c.workers_from_proto(response)

    # ---- Schedules ------------------------------------------------------------------------------

    def create_schedule(
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
        return self.create_schedule_spec(spec)

    def create_schedule_spec(self, spec: ScheduleSpec) -> ScheduleInfo:
        """Create a schedule from a full spec (any execution spec, several tasks included)."""
        response: tpb.CreateScheduleResponse = self._unary(
            self._stub.CreateSchedule, s.create_request(spec), idempotent=False
        )
        return s.schedule_from_proto(response.schedule)

    def schedules(self, *, next_fire_times: int = 1) -> builtins.list[ScheduleInfo]:
        """Every schedule, by name, each with its next `next_fire_times` fire times."""
        request = c.request(tpb.ListSchedulesRequest, next_fire_times=next_fire_times)
        response: tpb.ListSchedulesResponse = self._unary(self._stub.ListSchedules, request, idempotent=True)
        return [s.schedule_from_proto(schedule) for schedule in response.schedules]

    def get_schedule(self, name: str, *, next_fire_times: int = 5) -> ScheduleInfo:
        """One schedule with its next fire times; NotFound when there is none."""
        request = c.request(tpb.GetScheduleRequest, name=name, next_fire_times=next_fire_times)
        response: tpb.GetScheduleResponse = self._unary(self._stub.GetSchedule, request, idempotent=True)
        return s.schedule_from_proto(response.schedule)

    def pause_schedule(self, name: str) -> ScheduleInfo:
        """Pause a schedule (idempotent): it starts nothing until resumed."""
        response: tpb.PauseScheduleResponse = self._unary(
            self._stub.PauseSchedule, c.request(tpb.PauseScheduleRequest, name=name), idempotent=True
        )
        return s.schedule_from_proto(response.schedule)

    def resume_schedule(self, name: str) -> ScheduleInfo:
        """Resume a schedule (idempotent) from now on; the fire times while it was paused are not made up."""
        response: tpb.ResumeScheduleResponse = self._unary(
            self._stub.ResumeSchedule, c.request(tpb.ResumeScheduleRequest, name=name), idempotent=True
        )
        return s.schedule_from_proto(response.schedule)

    def delete_schedule(self, name: str) -> None:
        """Delete a schedule; the executions it started go on. NotFound when there is none."""
        self._unary(self._stub.DeleteSchedule, c.request(tpb.DeleteScheduleRequest, name=name), idempotent=False)

    def trigger_schedule(self, name: str) -> str:
        """Start one execution of the schedule now (whatever its overlap policy, even paused); returns its id."""
        response: tpb.TriggerScheduleResponse = self._unary(
            self._stub.TriggerSchedule, c.request(tpb.TriggerScheduleRequest, name=name), idempotent=False
        )
        return response.execution_id

    def watch(
        self, execution_id: str, after_sequence: int = 0, *, timeout: timedelta | None = None
    ) -> Generator[WatchEvent, None, None]:
        """The execution's events in order: its history after `after_sequence`, then live ones.

        Ends after the event that makes the execution terminal. A broken stream is reopened after the last
        event received, so no event is lost or repeated: a server that restarts is waited for as long as
        `timeout` allows (`RpcRetry.resume_s` without one). `timeout` bounds the whole watch (WaitTimeout).
        """
        cursor = st.WatchCursor(execution_id, after_sequence, timeout, retry=self._retry, address=self._address)
        fetch = tenacity.Retrying(**cursor.retry_options())
        stream: st.ResumableStream[st.WatchCursor, _Call] = st.ResumableStream(
            lambda request, timeout_s: self._stub.WatchExecution(request, timeout=timeout_s), cursor
        )
        try:
            while (event := fetch(_next_event, stream)) is not None:
                yield event
        finally:
            stream.close()

    def watch_events(
        self, *, handler: str = "", states: Iterable[State | str] = ()
    ) -> Generator[WatchEvent, None, None]:
        """Live events of all executions, from now on (nothing is replayed), as they become durable.

        `handler`: only executions with a task run of it; `states`: only events where the execution's
        state just before or right after is one of them. Never ends by itself: close the generator to
        stop. Raises WatcherFellBehind when it was read too slowly and the server dropped it, and
        ServerUnavailable when the server goes away; it is not resumed (a new watch starts from its own
        now, so re-read what it shows with `list`).
        """
        call = self._stub.WatchEvents(events_request(handler, states))
        try:
            for response in call:
                yield event_of(response)
        except grpc.RpcError as error:
            raise error_from_rpc(error, address=self._address) from error
        finally:
            call.cancel()

    def identity(self) -> Identity:
        """Who the server takes this client to be, and its role (anonymous "admin" without authentication)."""
        response: tpb.GetIdentityResponse = self._unary(
            self._stub.GetIdentity, tpb.GetIdentityRequest(), idempotent=True
        )
        return identity_from_proto(response)

    def wait_finished(
        self,
        execution_id: str,
        timeout: timedelta | None = None,
        *,
        on_event: Callable[[WatchEvent], object] | None = None,
    ) -> ExecutionSnapshot:
        """Block until the execution is terminal and return it, whatever its final state.

        `on_event` sees every event as it arrives (to show progress). Raises WaitTimeout when `timeout` passes.
        """
        if on_event is not None and not callable(on_event):
            raise TypeError(
                f"on_event must be a function of one event, got {type(on_event).__name__} {on_event!r:.100}"
            )
        if on_event is None:
            try:
                return self.wait_many([execution_id], timeout)[0]
            except Unimplemented:
                on_event = c.ignore_event
        waiter = st.FinishWait(execution_id, timeout, retry=self._retry)
        while True:
            events = self.watch(execution_id, after_sequence=waiter.last, timeout=waiter.watch_timeout())
            try:
                for event in events:
                    terminal = waiter.seen(event)
                    on_event(event)
                    if terminal:
                        break
            except WaitTimeout:
                raise waiter.timed_out() from None
            finally:
                events.close()
            current = self.get(execution_id)
            if current.is_terminal:
                return current
            # The stream ended before the terminal event (the server went away): follow on after a pause.
            time.sleep(waiter.next_round())

    def wait(self, execution_id: str, timeout: timedelta | None = None) -> Any:
        """The output of the execution once it succeeds: the task's output when it has one task, else the
        outputs by task id. Raises ExecutionFailed or ExecutionCancelled (with the reason code), WaitTimeout."""
        return c.result_of(self.wait_finished(execution_id, timeout))

    def as_completed(
        self, execution_ids: Iterable[str], timeout: timedelta | None = None
    ) -> Generator[ExecutionSnapshot, None, None]:
        """Each of the executions once it is terminal, whatever its final state, as they finish: those
        already finished first. Any number of ids (each is waited for once); NotFound names one that does not
        exist, before anything is yielded. Across a server restart the wait goes on for those not received
        yet, for as long as `timeout` allows (`RpcRetry.resume_s` without one). Raises WaitTimeout, naming
        those not finished (`unfinished`), once `timeout` passes."""
        cursor = st.WaitCursor(execution_ids, timeout, retry=self._retry, address=self._address)
        fetch = tenacity.Retrying(**cursor.retry_options())
        stream: st.ResumableStream[st.WaitCursor, _WaitCall] = st.ResumableStream(
            lambda request, timeout_s: self._stub.WaitExecutions(request, timeout=timeout_s), cursor
        )
        try:
            while cursor.pending:
                yield from fetch(_next_finished, stream)
        finally:
            stream.close()

    def wait_many(
        self, execution_ids: Iterable[str], timeout: timedelta | None = None
    ) -> builtins.list[ExecutionSnapshot]:
        """Block until every one of the executions is terminal; them, in the order given (see `as_completed`)."""
        execution_ids = builtins.list(c.many(execution_ids, "execution_ids"))
        finished = {done.id: done for done in self.as_completed(execution_ids, timeout)}
        return [finished[execution_id] for execution_id in execution_ids]

    def list(
        self,
        *,
        states: Iterable[State | str] = (),
        handler: str = "",
        limit: int | None = None,
        page_size: int | None = None,
    ) -> Generator[ExecutionSnapshot, None, None]:
        """Executions, newest first, fetched page by page as you iterate; at most `limit` of them."""
        pager = c.ListPager(states=states, handler=handler, limit=limit, page_size=page_size)
        while pager.more:
            response: tpb.ListExecutionsResponse = self._unary(
                self._stub.ListExecutions, pager.request(), idempotent=True
            )
            yield from pager.page(response)


class _Call(Protocol):
    """What the watch uses of a server-streaming call."""

    def __iter__(self) -> Iterator[tpb.WatchExecutionResponse]: ...

    def cancel(self) -> bool: ...


def _next_event(stream: st.ResumableStream[st.WatchCursor, _Call]) -> WatchEvent | None:
    """The next event not delivered yet; None when the server ended the stream (after the terminal event)."""
    try:
        for response in stream.call():
            event = stream.cursor.received(response)
            if event is not None:
                return event
    except grpc.RpcError as error:
        raise stream.broke(error) from error
    return None


class _WaitCall(Protocol):
    """What a wait uses of a server-streaming call."""

    def __iter__(self) -> Iterator[tpb.WaitExecutionsResponse]: ...

    def cancel(self) -> bool: ...


def _next_finished(stream: st.ResumableStream[st.WaitCursor, _WaitCall]) -> builtins.list[ExecutionSnapshot]:
    """The executions of the next message not delivered yet (perhaps none); none either when the server ended
    the call, having sent all it was asked for (the next read opens a call for the rest, if any)."""
    try:
        for response in stream.call():
            return stream.cursor.received(response)
    except grpc.RpcError as error:
        raise stream.broke(error) from error
    stream.ended()
    return []
