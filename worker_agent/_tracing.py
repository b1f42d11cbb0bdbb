"""Traces: each attempt is a span in the submitter's trace, and the handler's own spans nest under it.

The server keeps the W3C trace context a submitter sent (`traceparent`, `tracestate`) and sends it with
every attempt. Here the attempt becomes two spans, children of the submitter's span:

- `taskwire.queue`: from when the task run was queued to when its handler starts (the wait);
- `taskwire.attempt <handler>`: the handler's run, linked to its wait, current while the handler runs
  (so spans the handler starts are its children). A retry is another pair under the same parent,
  told apart by `taskwire.attempt`.

Only the OpenTelemetry API is used: with no tracer provider configured in the worker process (the
default) every call is a no-op. Configure one (an exporter, for example OTLP) to send the spans.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ._context import AttemptInfo

_tracer = trace.get_tracer("taskwire.worker")


@contextmanager
def attempt_span(info: AttemptInfo) -> Iterator[trace.Span]:
    """The attempt's span, current for the duration of the block (and its wait, ended at its start)."""
    parent = propagate.extract(dict(info.trace_context)) if info.trace_context else otel_context.Context()
    attributes: dict[str, AttributeValue] = {
        "taskwire.execution_id": info.execution_id,
        "taskwire.task_id": info.task_id,
        "taskwire.task_run_id": info.task_run_id,
        "taskwire.attempt": info.attempt,
        "taskwire.handler": info.handler,
    }
    links = []
    if info.queued_at is not None:
        wait = _tracer.start_span(
            "taskwire.queue",
            context=parent,
            kind=SpanKind.INTERNAL,
            start_time=int(info.queued_at.timestamp() * 1e9),
            attributes=attributes,
        )
        wait.end(end_time=time.time_ns())
        links.append(Link(wait.get_span_context()))
    span = _tracer.start_span(
        f"taskwire.attempt {info.handler}", context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes
    )
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        yield span
    finally:
        otel_context.detach(token)
        span.end()


def record_outcome(span: trace.Span, error: BaseException | None) -> None:
    if error is None:
        return
    try:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    except Exception:  # a handler's exception whose __str__ raises: the span says only its type
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
