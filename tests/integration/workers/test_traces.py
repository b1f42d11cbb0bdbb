"""Traces: the trace context of a submit is stored with the execution and continued into each attempt, so
the handler's spans join the submitter's trace (its wait, its attempts and their retries).

A real server process; the worker runs in this process so that its spans reach the in-memory exporter.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from taskwire.client import Client, State
from taskwire.worker import HandlerRegistry, TaskContext, Worker
from tests.harness import BIN, Cluster, ServerProcess, wait_for
from tests.integration.workers.support import FINISH

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> TracerProvider:
    """The process's tracer provider, exporting to memory (set once: OpenTelemetry allows one per process)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(made)
    return made


def _flaky(ctx: TaskContext) -> str:
    """Fails its first attempt; starts a span of its own on each."""
    with trace.get_tracer("handler").start_as_current_span("handler.work"):
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "done"


@pytest.fixture
def worker(server: ServerProcess) -> Iterator[None]:
    """A worker agent in this process (its own thread and event loop), serving `traced`."""
    registry = HandlerRegistry()
    registry.register(_flaky, name="traced")
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    agent = Worker(server=server.address, registry=registry, slots=2, name="tracer")

    async def serve() -> None:
        await agent.start()
        await agent.wait_connected(timeout_s=20)
        ready.set()
        await agent.wait_closed()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the worker did not connect"
    yield
    asyncio.run_coroutine_threadsafe(agent.shutdown(grace_s=0), loop).result(timeout=30)
    thread.join(timeout=30)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def spans_of(trace_id: int) -> list[ReadableSpan]:
    return [span for span in EXPORTER.get_finished_spans() if span.context.trace_id == trace_id]


def test_a_submit_in_a_span_is_continued_by_each_attempt(worker: None, client: Client) -> None:
    tracer = trace.get_tracer("submitter")
    with tracer.start_as_current_span("checkout") as parent:
        execution = client.submit("traced", None, max_attempts=2)
    done = client.wait_finished(execution.id, FINISH)
    assert done.state is State.SUCCESS, done
    assert "traceparent" in done.execution.trace_context
    trace_id, parent_id = parent.get_span_context().trace_id, parent.get_span_context().span_id

    def complete() -> list[ReadableSpan] | None:
        spans = spans_of(trace_id)
        return spans if len([s for s in spans if s.name == "handler.work"]) == 2 else None

    spans = wait_for(complete, what="the attempts' spans")
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    attempts = sorted(by_name["taskwire.attempt traced"], key=lambda s: str((s.attributes or {})["taskwire.attempt"]))
    waits = by_name["taskwire.queue"]
    assert [s.attributes["taskwire.attempt"] for s in attempts] == [1, 2]  # type: ignore[index]
    assert len(waits) == 2
    for span in (*attempts, *waits):
        assert span.parent is not None
        assert span.parent.span_id == parent_id  # children of the submitter's span
        assert span.attributes["taskwire.execution_id"] == execution.id  # type: ignore[index]
    assert all(span.kind is SpanKind.CONSUMER for span in attempts)
    assert attempts[0].status.status_code is StatusCode.ERROR  # the first attempt raised
    assert attempts[1].status.status_code is not StatusCode.ERROR
    wait_ids = {span.context.span_id for span in waits}
    for attempt in attempts:  # each attempt is linked to its wait in the queue
        assert {link.context.span_id for link in attempt.links} <= wait_ids
        assert len(attempt.links) == 1
    # The handler's own spans are children of its attempt's span.
    attempt_ids = {span.context.span_id for span in attempts}
    handler_spans = by_name["handler.work"]
    assert {span.parent.span_id for span in handler_spans if span.parent} == attempt_ids


def test_the_cli_continues_the_trace_in_traceparent(worker: None, server: ServerProcess, procs: Cluster) -> None:
    trace_id, span_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    traceparent = f"00-{trace_id:032x}-{span_id:016x}-01"
    result = subprocess.run(
        [str(BIN / "taskwire"), "--server", server.address, "submit", "traced", "--max-attempts", "2", "--wait"],
        env={**os.environ, "TRACEPARENT": traceparent},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    spans = wait_for(
        lambda: [s for s in spans_of(trace_id) if s.name == "taskwire.attempt traced"] or None,
        what="the attempt's span in the CLI's trace",
    )
    assert {span.parent.span_id for span in spans if span.parent} == {span_id}


def test_without_a_trace_nothing_is_sent(worker: None, client: Client) -> None:
    execution = client.submit("traced", None, max_attempts=2)
    done = client.wait_finished(execution.id, FINISH)
    assert done.state is State.SUCCESS
    assert dict(done.execution.trace_context) == {}
