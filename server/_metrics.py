"""The server's Prometheus metrics: what the engine observes, what a scrape reads, and gRPC calls.

Three sources, one registry per server (docs/metrics.md lists every name):
- `ServerMetrics` is the engine's `Observer`: counters and histograms updated as task runs change,
  cancels are confirmed and commits finish;
- `EngineGauges` is read at scrape time, on the server's loop: queue backlog and age, in-flight work,
  workers and their slots;
- `CallMetrics` is a gRPC interceptor counting handled calls by service, method and status code.

Labels stay bounded: handler and worker names, states, reasons and status codes; never ids.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._auth_policy import RULES
from ._edge import HandlerWrappers
from .domain import AttemptOutcome, ReasonCode, State, TaskRun, infrastructure_failure
from .engine import Engine

# No `_created` series: they double the samples of every counter and histogram, and nothing here needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# From a millisecond to an hour: dispatch on an idle server takes milliseconds, a backlog hours.
_WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_CANCEL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# Call counters kept per (method, code); past this many, from callers naming methods nobody serves, each is
# looked up per call.
_KEPT_CHILDREN = 1024
_RECORD_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class ServerMetrics:
    """The engine's observer: metrics of what happens, kept in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._schedule_to_start = Histogram(
            "taskwire_schedule_to_start_seconds",
            "Time from a task run being queued to its attempt being dispatched to a worker.",
            ["handler"],
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self._finished = Counter(
            "taskwire_task_runs_finished",
            "Task runs that reached a terminal state, by state and reason.",
            ["handler", "state", "reason"],
            registry=registry,
        )
        self._lost = Counter(
            "taskwire_attempts_lost",
            "Attempts lost with their worker (its lease expired, or it no longer ran them).",
            ["handler"],
            registry=registry,
        )
        self._retried = Counter(
            "taskwire_attempts_retried",
            "Attempts that ended in a retry, by cause: the handler's error, or infrastructure "
            "(worker lost or shut down).",
            ["handler", "cause"],
            registry=registry,
        )
        self._cancel_delivery = Histogram(
            "taskwire_cancel_delivery_seconds",
            "Time from the server sending a cancel to the worker confirming the attempt ended.",
            ["handler"],
            buckets=_CANCEL_BUCKETS,
            registry=registry,
        )
        self._commit = Histogram(
            "taskwire_store_commit_seconds",
            "Time to make one group of writes durable.",
            buckets=_COMMIT_BUCKETS,
            registry=registry,
        )
        self._commit_records = Histogram(
            "taskwire_store_commit_records",
            "Records (executions, task runs, events, deletions) per durable commit.",
            buckets=_RECORD_BUCKETS,
            registry=registry,
        )

    def task_run_changed(self, before: TaskRun | None, after: TaskRun) -> None:
        if before is None:
            return
        handler = after.handler
        if before.state is State.PENDING and after.state is State.RUNNING and after.current_attempt is not None:
            waited = (after.current_attempt.started_at - before.updated_at).total_seconds()
            self._schedule_to_start.labels(handler).observe(max(waited, 0.0))
        ended = _ended_attempt(before, after)
        if ended is not None and ended.outcome is AttemptOutcome.LOST:
            self._lost.labels(handler).inc()
        if after.state.is_terminal and not before.state.is_terminal:
            reason = after.reason.code.value if after.reason is not None else ""
            self._finished.labels(handler, after.state.value, reason).inc()
        elif (
            ended is not None
            and after.state is State.WAITING
            and after.reason is not None
            and after.reason.code is ReasonCode.RETRY_BACKOFF
        ):
            cause = "infrastructure" if infrastructure_failure(ended) is not None else "handler"
            self._retried.labels(handler, cause).inc()

    def cancel_confirmed(self, handler: str, seconds: float) -> None:
        self._cancel_delivery.labels(handler).observe(seconds)

    def committed(self, seconds: float, records: int) -> None:
        self._commit.observe(seconds)
        self._commit_records.observe(records)


def _ended_attempt(before: TaskRun, after: TaskRun) -> Any:
    """The attempt that was running before and has ended in `after`, if any."""
    running = before.current_attempt
    if running is None or not running.is_running or len(after.attempts) < running.number:
        return None
    now = after.attempts[running.number - 1]
    return None if now.is_running else now


class EngineGauges(Collector):
    """What a scrape reads from the engine: gauges of the moment."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        stats = self._engine.stats()
        backlog = GaugeMetricFamily(
            "taskwire_queue_backlog", "Task runs queued (PENDING), per handler.", labels=["handler"]
        )
        in_flight = GaugeMetricFamily("taskwire_tasks_in_flight", "Task runs RUNNING, per handler.", labels=["handler"])
        serving = GaugeMetricFamily(
            "taskwire_handler_workers", "Connected workers that serve the handler.", labels=["handler"]
        )
        for handler in stats.handlers:
            backlog.add_metric([handler.handler], handler.pending)
            in_flight.add_metric([handler.handler], handler.in_flight)
            serving.add_metric([handler.handler], handler.workers)
        yield from (backlog, in_flight, serving)
        now = datetime.now(UTC)
        age = GaugeMetricFamily(
            "taskwire_queue_oldest_age_seconds",
            "Age of the oldest queued task run held in memory, per handler (0: none queued).",
            labels=["handler"],
        )
        oldest = self._engine.oldest_queued()
        for handler in stats.handlers:
            queued_at = oldest.get(handler.handler)
            age.add_metric([handler.handler], max((now - queued_at).total_seconds(), 0.0) if queued_at else 0.0)
        yield age
        yield GaugeMetricFamily(
            "taskwire_queue_size", "Task runs accepted and not yet dispatched.", value=stats.queue.size
        )
        yield GaugeMetricFamily(
            "taskwire_queue_capacity", "The queue's capacity (--queue-capacity).", value=stats.queue.capacity
        )
        yield GaugeMetricFamily(
            "taskwire_connected_workers", "Worker sessions connected now.", value=stats.connected_workers
        )
        slots = GaugeMetricFamily("taskwire_worker_slots", "Slots a worker declared.", labels=["worker"])
        used = GaugeMetricFamily(
            "taskwire_worker_slots_in_use", "Slots of a worker taken by attempts.", labels=["worker"]
        )
        per_worker: dict[str, tuple[int, int]] = {}
        for session in self._engine.workers():
            total, busy = per_worker.get(session.name, (0, 0))
            per_worker[session.name] = (total + session.slots, busy + len(session.held) + len(session.stray))
        for name, (total, busy) in sorted(per_worker.items()):
            slots.add_metric([name], total)
            used.add_metric([name], busy)
        yield from (slots, used)


_UNKNOWN = ("unknown", "", "unknown")


class CallMetrics(grpc.aio.ServerInterceptor):
    """Counts handled gRPC calls by service, method and status code (`grpc_server_handled_total`, the name
    the go-grpc-prometheus convention uses), and their duration."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._handled = Counter(
            "grpc_server_handled",
            "gRPC calls completed on the server, by status code.",
            ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
            registry=registry,
        )
        self._seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time the server took to complete a call (streams: their whole life).",
            ["grpc_service", "grpc_method", "grpc_type"],
            buckets=(*_COMMIT_BUCKETS, 5, 30, 300, 3600),
            registry=registry,
        )
        # Wrappers and metric children found once and kept: a label lookup takes a lock and builds a key.
        self._wrappers = HandlerWrappers(self._wrap)
        self._handled_by: dict[tuple[tuple[str, str, str], str], Any] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self._wrappers.get(handler, handler_call_details.method)

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], full_method: str) -> grpc.RpcMethodHandler[Any, Any]:
        # A method the server does not serve is named by its caller: it is counted as `unknown`, so that
        # callers cannot add label values without end.
        service, _, method = full_method.lstrip("/").rpartition("/") if full_method in RULES else _UNKNOWN
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, service, method, "unary"),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, service, method, "server_stream"),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_stream is not None:
            # A handler that writes through its context stays a coroutine: grpc then sends what it writes
            # without passing each message through a generator of ours.
            wrap = self._unary if inspect.iscoroutinefunction(handler.stream_stream) else self._stream
            return grpc.stream_stream_rpc_method_handler(
                wrap(handler.stream_stream, service, method, "bidi_stream"),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler

    def _done(
        self, labels: tuple[str, str, str], seconds: Any, context: Any, started: float, error: BaseException | None
    ) -> None:
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            name = code.name
        elif error is None:
            name = "OK"
        else:
            name = "CANCELLED" if isinstance(error, asyncio.CancelledError) else "UNKNOWN"
        handled = self._handled_by.get((labels, name))
        if handled is None:
            handled = self._handled.labels(*labels, name)
            if len(self._handled_by) < _KEPT_CHILDREN:
                self._handled_by[(labels, name)] = handled
        handled.inc()
        seconds.observe(time.perf_counter() - started)

    def _unary(self, behavior: Any, service: str, method: str, kind: str) -> Any:
        labels = (service, method, kind)
        seconds = self._seconds.labels(*labels)  # once per method: the wrapper is kept (HandlerWrappers)

        async def handle(request: Any, context: Any) -> Any:
            started, error = time.perf_counter(), None
            try:
                return await behavior(request, context)
            except BaseException as raised:
                error = raised
                raise
            finally:
                self._done(labels, seconds, context, started, error)

        return handle

    def _stream(self, behavior: Any, service: str, method: str, kind: str) -> Any:
        labels = (service, method, kind)
        seconds = self._seconds.labels(*labels)

        async def handle(request: Any, context: Any) -> AsyncIterator[Any]:
            started, error = time.perf_counter(), None
            try:
                result = behavior(request, context)
                if hasattr(result, "__aiter__"):
                    async for response in result:
                        yield response
                else:
                    await result  # a handler that writes with context.write and returns
            except BaseException as raised:
                error = raised
                raise
            finally:
                self._done(labels, seconds, context, started, error)

        return handle
