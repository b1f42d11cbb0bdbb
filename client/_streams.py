"""The server streams a client follows across outages: a watch (WatchExecution) and a wait for many
executions (WaitExecutions). Each is a cursor, which knows where to resume and whether to reconnect, and
a `ResumableStream`, which holds the open call; the sync and async clients drive them with their own I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar

import grpc
import tenacity

from taskwire.common import TaskwireError
from taskwire.v1 import task_service_pb2 as tpb

from ._common import backoff_s, backoff_wait, deadline_exceeded, expect, many, request, retry_options, seconds, snapshot
from ._errors import WaitTimeout, error_from_rpc, reached_a_server
from ._events import ExecutionTransition, WatchEvent, event_from_proto
from ._models import ExecutionSnapshot, RpcRetry

# The most executions one WaitExecutions call may name (the server's bound); more are waited for in turns.
MAX_WAIT_IDS = 10_000


def deadline_after(timeout: timedelta | None, clock: Callable[[], float] = time.monotonic) -> float | None:
    """The clock reading at which `timeout` (from now) runs out; None without a timeout."""
    return clock() + seconds(timeout) if timeout is not None else None


class Reconnecting:
    """Whether a followed stream reconnects after it broke, or gives up.

    Only transport failures are retried (UNAVAILABLE: the server unreachable or going away), with the
    backoff of `retry_options`, for as long as the timeout allows (then WaitTimeout). Without a timeout:
    until a call of the stream has reached a server they count like any call's (`RpcRetry.max_attempts`,
    so a wrong address fails fast); once one has, the server went away under a running stream (a restart)
    and it reconnects for up to `RpcRetry.resume_s` of outage. A call reached a server when a message came
    on it, or when it failed otherwise than for want of a connection (`reached_a_server`): a watch that
    waits at the end of a history receives nothing until the next event, and its server may restart
    meanwhile. Any other status (NOT_FOUND, ...) ends it.
    """

    def __init__(
        self,
        timeout: timedelta | None,
        *,
        retry: RpcRetry,
        address: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connected = False  # a call reached the server: a message arrived, or it failed there
        self._outage_since: float | None = None  # first failure since the last message
        self._timeout = timeout
        self._retry = retry
        self._address = address
        self._clock = clock
        self._deadline = deadline_after(timeout, clock)

    def timed_out(self) -> WaitTimeout:
        raise NotImplementedError

    def request(self) -> Any:
        """The request that (re)opens the stream where it stands."""
        raise NotImplementedError

    def ended(self) -> None:
        """The server ended the stream (OK)."""

    def _reached(self) -> None:
        self.connected = True
        self._outage_since = None

    @property
    def timeout_s(self) -> float:
        return seconds(self._timeout or timedelta())

    def remaining_s(self) -> float | None:
        """The deadline of the next stream; raises WaitTimeout when the timeout has passed."""
        if self._deadline is None:
            return None
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise self.timed_out()
        return remaining

    def error(self, error: grpc.RpcError) -> TaskwireError:
        """The taskwire error of a broken stream (WaitTimeout when the timeout passed); an outage begins."""
        if self._timeout is not None and deadline_exceeded(error):
            return self.timed_out()
        if reached_a_server(error):
            self.connected = True
        if self._outage_since is None:
            self._outage_since = self._clock()
        return error_from_rpc(error, address=self._address)

    def retry_options(self) -> dict[str, Any]:
        """tenacity options for reading the next message: reconnect on transport failures while it may."""
        backoff = backoff_wait(self._retry)

        def pause_s(state: tenacity.RetryCallState) -> float:
            # Never sleep past the deadline: the next attempt then ends it with WaitTimeout.
            pause = backoff(state)
            if self._deadline is not None:
                pause = min(pause, max(self._deadline - self._clock(), 0.0))
            return pause

        return {**retry_options(self._retry), "stop": self._stop, "wait": pause_s}

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        if self._deadline is not None:
            return False  # the timeout ends it (`remaining_s` raises WaitTimeout)
        if not self.connected:
            return state.attempt_number >= self._retry.max_attempts
        if self._retry.resume_s is None:
            return False
        since = self._outage_since if self._outage_since is not None else self._clock()
        return self._clock() - since >= self._retry.resume_s


class WatchCursor(Reconnecting):
    """One `watch`: it resumes after the last event it received."""

    def __init__(
        self,
        execution_id: str,
        after_sequence: int,
        timeout: timedelta | None,
        *,
        retry: RpcRetry,
        address: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(timeout, retry=retry, address=address, clock=clock)
        self.execution_id = execution_id
        self.last = after_sequence

    def request(self) -> tpb.WatchExecutionRequest:
        return request(tpb.WatchExecutionRequest, execution_id=self.execution_id, after_sequence=self.last)

    def timed_out(self) -> WaitTimeout:
        return WaitTimeout(self.execution_id, self.timeout_s)

    def received(self, response: tpb.WatchExecutionResponse) -> WatchEvent | None:
        """Record a response: the event to deliver, or None for one delivered already."""
        self._reached()
        if response.event.sequence <= self.last:
            return None
        self.last = response.event.sequence
        return event_from_proto(response.event)


class WaitCursor(Reconnecting):
    """One wait for many executions (`as_completed`): it asks again for those it has not received, at most
    `MAX_WAIT_IDS` per call (the next ones once a call has delivered all of its own)."""

    def __init__(
        self,
        execution_ids: Iterable[str],
        timeout: timedelta | None,
        *,
        retry: RpcRetry,
        address: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(timeout, retry=retry, address=address, clock=clock)
        ids = list(many(execution_ids, "execution_ids"))
        for execution_id in ids:
            expect(execution_id, str, "each of execution_ids")
        self.pending = dict.fromkeys(ids)  # in the order given, each once
        self._asked: list[str] = []

    def request(self) -> tpb.WaitExecutionsRequest:
        self._asked = [execution_id for execution_id, _ in zip(self.pending, range(MAX_WAIT_IDS), strict=False)]
        return request(tpb.WaitExecutionsRequest, execution_ids=self._asked)

    def timed_out(self) -> WaitTimeout:
        return WaitTimeout("", self.timeout_s, unfinished=list(self.pending))

    def received(self, response: tpb.WaitExecutionsResponse) -> list[ExecutionSnapshot]:
        """Record a response: the executions to deliver (each once, also across reconnections)."""
        self._reached()
        pending = self.pending
        finished = []
        for message in response.executions:
            if message.id in pending:
                del pending[message.id]
                finished.append(snapshot(message))
        return finished

    def ended(self) -> None:
        """The server ended the call: it has sent every execution it was asked for."""
        missing = [execution_id for execution_id in self._asked if execution_id in self.pending]
        if missing:
            raise TaskwireError(f"the server ended the wait without execution {missing[0]}")


class Cancellable(Protocol):
    def cancel(self) -> bool: ...


CallT = TypeVar("CallT", bound=Cancellable)
CursorT = TypeVar("CursorT", bound=Reconnecting)


class ResumableStream(Generic[CursorT, CallT]):
    """The call of one watch or wait (sync or grpc.aio), reopened where the cursor stands once it broke or
    ended; each client reads it with its own I/O."""

    def __init__(self, open_call: Callable[[Any, float | None], CallT], cursor: CursorT):
        self.cursor = cursor
        self._open = open_call
        self._call: CallT | None = None

    def call(self) -> CallT:
        """The open call, opened where the cursor stands (with what is left of the timeout)."""
        if self._call is None:
            self._call = self._open(self.cursor.request(), self.cursor.remaining_s())
        return self._call

    def broke(self, error: grpc.RpcError) -> TaskwireError:
        """Drop the broken call; the error to raise (the next `call()` reopens it)."""
        self.close()
        return self.cursor.error(error)

    def ended(self) -> None:
        """The server ended the call (OK): the next `call()`, if any, opens a new one."""
        self._call = None
        self.cursor.ended()

    def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None


class FinishWait:
    """One `wait_finished` that shows the events on the way: the watches it opens one after another until
    the execution is terminal."""

    def __init__(
        self,
        execution_id: str,
        timeout: timedelta | None,
        *,
        retry: RpcRetry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.execution_id = execution_id
        self.last = 0
        self.rounds = 0
        self._timeout = timeout
        self._retry = retry
        self._clock = clock
        self._deadline = deadline_after(timeout, clock)

    def watch_timeout(self) -> timedelta | None:
        """The timeout of the next watch: what is left of the wait's."""
        if self._deadline is None:
            return None
        return timedelta(seconds=max(self._deadline - self._clock(), 0.0))

    def seen(self, event: WatchEvent) -> bool:
        """Record an event; True when it makes the execution terminal (the watch may stop)."""
        self.last = event.sequence
        return isinstance(event, ExecutionTransition) and event.is_terminal

    def timed_out(self) -> WaitTimeout:
        return WaitTimeout(self.execution_id, seconds(self._timeout or timedelta()))

    def next_round(self) -> float:
        """The stream ended before the terminal event (the server went away): the pause before following on."""
        self.rounds += 1
        return backoff_s(self._retry, self.rounds)
