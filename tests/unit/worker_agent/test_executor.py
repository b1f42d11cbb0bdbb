"""The executor: outcomes, aborts, the local deadline, the de-dup guard and the slot limit."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator

import pytest

from taskwire.worker import (
    AbortReason,
    Cancelled,
    Completed,
    Failed,
    HandlerRegistry,
    NonRetryableError,
    TaskContext,
    handler,
)
from taskwire.worker._executor import Executor, SubmitResult
from tests.harness import wait_for
from tests.unit.worker_agent.recording import RecordingSink, make_spec

handlers = HandlerRegistry()


@handler(registry=handlers)
async def returns_input(ctx: TaskContext) -> object:
    return ctx.input


@handler(registry=handlers)
def sync_returns_input(ctx: TaskContext) -> object:
    return ctx.input


@handler(registry=handlers)
def sync_names_its_thread(ctx: TaskContext) -> list[object]:
    thread = threading.current_thread()
    return [thread.ident, thread.name, thread.daemon]


@handler(registry=handlers)
async def raises_value_error(ctx: TaskContext) -> None:
    raise ValueError("bad value")


@handler(registry=handlers)
async def raises_non_retryable(ctx: TaskContext) -> None:
    raise NonRetryableError("will never work")


class QuotaExceeded(Exception):
    retryable = False


@handler(registry=handlers)
def raises_custom_non_retryable(ctx: TaskContext) -> None:
    raise QuotaExceeded("over quota")


@handler(registry=handlers)
async def waits_for_abort(ctx: TaskContext) -> None:
    await ctx.abort.wait()
    ctx.abort.raise_if_aborted()


@handler(registry=handlers)
def sync_waits_for_abort(ctx: TaskContext) -> None:
    ctx.abort.wait(30)
    ctx.abort.raise_if_aborted()


@handler(registry=handlers)
async def returns_after_abort(ctx: TaskContext) -> str:
    await ctx.abort.wait()
    return "finished anyway"


@handler(registry=handlers)
async def ignores_abort(ctx: TaskContext) -> None:
    await asyncio.Event().wait()  # never set: only a hard stop ends this


@handler(registry=handlers)
async def reports(ctx: TaskContext) -> str:
    ctx.progress(0.5, "half")
    ctx.logger.warning("careful")
    return "done"


@handler(registry=handlers)
def sync_reports(ctx: TaskContext) -> str:
    ctx.progress(0.25, "quarter")
    ctx.logger.info("from a thread")
    return "done"


@handler(registry=handlers)
async def returns_unencodable(ctx: TaskContext) -> object:
    return object()


@handler(registry=handlers)
def sync_returns_coroutine(ctx: TaskContext) -> object:
    return returns_input(ctx)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def executor(sink: RecordingSink) -> AsyncIterator[Executor]:
    async with Executor(registry=handlers, sink=sink, slots=4, stop_grace_s=0.2) as running:
        yield running


@pytest.mark.parametrize("handler", ["returns_input", "sync_returns_input"])
async def test_a_returned_value_completes_the_attempt(executor: Executor, sink: RecordingSink, handler: str) -> None:
    spec = make_spec(handler, {"n": 1})
    assert executor.submit(spec) is SubmitResult.ACCEPTED
    outcome = await sink.outcome(spec.key)
    assert isinstance(outcome, Completed)
    assert outcome.value == {"n": 1}
    assert outcome.output.content_type == "application/json"
    assert sink.kinds(spec.key) == ["started", "finished"]
    assert executor.in_flight == 0


async def test_a_raised_error_fails_the_attempt_retryably(executor: Executor, sink: RecordingSink) -> None:
    spec = make_spec("raises_value_error")
    executor.submit(spec)
    outcome = await sink.outcome(spec.key)
    assert isinstance(outcome, Failed)
    assert not outcome.timed_out
    assert (outcome.error.type, outcome.error.message, outcome.error.retryable) == ("ValueError", "bad value", True)
    assert "ValueError: bad value" in outcome.error.traceback
    assert "raises_value_error" in outcome.error.traceback


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [("raises_non_retryable", "NonRetryableError"), ("raises_custom_non_retryable", "QuotaExceeded")],
)
async def test_retryable_false_is_reported(
    executor: Executor, sink: RecordingSink, handler: str, error_type: str
) -> None:
    spec = make_spec(handler)
    executor.submit(spec)
    outcome = await sink.outcome(spec.key)
    assert isinstance(outcome, Failed)
    assert outcome.error.type == error_type
    assert outcome.error.retryable is False


@pytest.mark.parametrize(
    "reason",
    [
        AbortReason.CANCELLED,
        AbortReason.TIMED_OUT,
        AbortReason.EXECUTION_TIMED_OUT,
        AbortReason.UPSTREAM_FAILED,
        AbortReason.LEASE_LOST,
    ],
)
@pytest.mark.parametrize("handler", ["waits_for_abort", "sync_waits_for_abort"])
async def test_a_cancel_aborts_the_handler_and_ends_it_cancelled(
    executor: Executor, sink: RecordingSink, handler: str, reason: AbortReason
) -> None:
    spec = make_spec(handler)
    executor.submit(spec)
    await sink.started(spec.key)
    assert executor.abort(spec.key, reason, "because")
    assert await sink.outcome(spec.key) == Cancelled(reason=reason, message="because")


async def test_a_cancelled_handler_that_returns_anyway_is_still_cancelled(
    executor: Executor, sink: RecordingSink
) -> None:
    spec = make_spec("returns_after_abort")
    executor.submit(spec)
    await sink.started(spec.key)
    executor.abort(spec.key, AbortReason.CANCELLED)
    assert isinstance(await sink.outcome(spec.key), Cancelled)


async def test_lease_lost_after_a_cancel_still_silences_the_attempt(executor: Executor, sink: RecordingSink) -> None:
    spec = make_spec("ignores_abort")
    executor.submit(spec)
    await sink.started(spec.key)
    executor.abort(spec.key, AbortReason.CANCELLED)
    executor.abort(spec.key, AbortReason.LEASE_LOST)
    outcome = await sink.outcome(spec.key)
    assert isinstance(outcome, Cancelled)
    assert outcome.reason is AbortReason.LEASE_LOST


async def test_an_async_handler_ignoring_its_abort_is_cancelled_after_the_grace(
    executor: Executor, sink: RecordingSink
) -> None:
    spec = make_spec("ignores_abort")
    executor.submit(spec)
    await sink.started(spec.key)
    executor.abort(spec.key, AbortReason.CANCELLED)
    assert await sink.outcome(spec.key, timeout_s=5) == Cancelled(reason=AbortReason.CANCELLED)


@pytest.mark.parametrize("handler", ["waits_for_abort", "sync_waits_for_abort", "ignores_abort"])
async def test_the_local_deadline_fails_the_attempt_as_timed_out(
    executor: Executor, sink: RecordingSink, handler: str
) -> None:
    spec = make_spec(handler, timeout_s=0.05)
    executor.submit(spec)
    outcome = await sink.outcome(spec.key)
    assert isinstance(outcome, Failed)
    assert outcome.timed_out
    assert (outcome.error.type, outcome.error.retryable) == ("TimeoutError", True)


async def test_the_deadline_counts_from_receipt(executor: Executor, sink: RecordingSink) -> None:
    loop = asyncio.get_running_loop()
    spec = make_spec("waits_for_abort", timeout_s=5.0)
    # Received 10 s ago (say, while the loop was busy): the deadline has already passed.
    spec = type(spec)(info=spec.info, timeout_s=5.0, received_at=loop.time() - 10)
    executor.submit(spec)
    outcome = await sink.outcome(spec.key, timeout_s=2)
    assert isinstance(outcome, Failed)
    assert outcome.timed_out


async def test_the_same_attempt_never_runs_twice(executor: Executor, sink: RecordingSink) -> None:
    spec = make_spec("waits_for_abort")
    assert executor.submit(spec) is SubmitResult.ACCEPTED
    assert executor.submit(spec) is SubmitResult.DUPLICATE
    await sink.started(spec.key)
    assert executor.in_flight == 1
    assert sink.kinds(spec.key) == ["started"]


async def test_another_attempt_of_a_running_task_run_is_rejected(executor: Executor, sink: RecordingSink) -> None:
    first = make_spec("waits_for_abort", task_run_id="run-x", attempt=1)
    second = make_spec("returns_input", task_run_id="run-x", attempt=2)
    executor.submit(first)
    assert executor.submit(second) is SubmitResult.REJECTED
    outcome = await sink.outcome(second.key)
    assert isinstance(outcome, Failed)
    assert outcome.error.type == "AttemptAlreadyRunning"
    assert sink.kinds(second.key) == ["finished"]
    assert executor.running() == [first.key]


async def test_never_more_than_the_slots(sink: RecordingSink) -> None:
    async with Executor(registry=handlers, sink=sink, slots=2, stop_grace_s=0.2) as executor:
        specs = [make_spec("waits_for_abort") for _ in range(3)]
        results = [executor.submit(spec) for spec in specs]
        assert results == [SubmitResult.ACCEPTED, SubmitResult.ACCEPTED, SubmitResult.REJECTED]
        rejected = await sink.outcome(specs[2].key)
        assert isinstance(rejected, Failed)
        assert (rejected.error.type, rejected.error.retryable) == ("SlotsExhausted", True)
        assert executor.in_flight == 2

        executor.abort(specs[0].key, AbortReason.CANCELLED)
        await sink.outcome(specs[0].key)
        later = make_spec("waits_for_abort")
        assert executor.submit(later) is SubmitResult.ACCEPTED
        assert executor.peak_in_flight == 2


async def test_an_unknown_handler_is_rejected(executor: Executor, sink: RecordingSink) -> None:
    spec = make_spec("no_such_handler")
    assert executor.submit(spec) is SubmitResult.REJECTED
    outcome = await sink.outcome(spec.key)
    assert isinstance(outcome, Failed)
    assert outcome.error.type == "HandlerNotFound"


async def test_nothing_new_is_accepted_once_stopped_accepting(executor: Executor, sink: RecordingSink) -> None:
    executor.stop_accepting()
    spec = make_spec("returns_input")
    assert executor.submit(spec) is SubmitResult.REJECTED
    outcome = await sink.outcome(spec.key)
    assert isinstance(outcome, Failed)
    assert outcome.error.type == "WorkerDraining"


@pytest.mark.parametrize("handler", ["reports", "sync_reports"])
async def test_progress_and_logs_arrive_between_started_and_finished(
    executor: Executor, sink: RecordingSink, handler: str
) -> None:
    spec = make_spec(handler)
    executor.submit(spec)
    await sink.outcome(spec.key)
    assert sink.kinds(spec.key) == ["started", "progress", "log", "finished"]


async def test_malformed_input_fails_without_retry(executor: Executor, sink: RecordingSink) -> None:
    spec = make_spec("returns_input")
    bad = type(spec.info)(
        task_run_id="run-bad",
        attempt=1,
        handler="returns_input",
        input=type(spec.info.input)(data=b"{not json", content_type="application/json"),
    )
    spec = type(spec)(info=bad)
    executor.submit(spec)
    outcome = await sink.outcome(spec.key)
    assert isinstance(outcome, Failed)
    assert (outcome.error.type, outcome.error.retryable) == ("InputDecodingError", False)


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [("returns_unencodable", "OutputEncodingError"), ("sync_returns_coroutine", "TypeError")],
)
async def test_bad_return_values_fail(executor: Executor, sink: RecordingSink, handler: str, error_type: str) -> None:
    spec = make_spec(handler)
    executor.submit(spec)
    outcome = await sink.outcome(spec.key)
    assert isinstance(outcome, Failed)
    assert outcome.error.type == error_type


async def test_stop_all_reports_worker_shutdown(executor: Executor, sink: RecordingSink) -> None:
    specs = [make_spec("waits_for_abort"), make_spec("sync_waits_for_abort")]
    for spec in specs:
        executor.submit(spec)
    for spec in specs:
        await sink.started(spec.key)
    await executor.stop_all()
    for spec in specs:
        outcome = await sink.outcome(spec.key)
        assert isinstance(outcome, Failed)
        assert (outcome.error.type, outcome.error.retryable) == ("WorkerShutdown", True)
    assert executor.in_flight == 0
    assert not executor.accepting


async def test_stop_all_gives_up_on_a_stuck_thread_but_still_reports_it(sink: RecordingSink) -> None:
    release = threading.Event()

    def ignores_abort_in_a_thread(ctx: TaskContext) -> None:
        release.wait(30)

    registry = HandlerRegistry()
    registry.register(ignores_abort_in_a_thread)
    executor = Executor(registry=registry, sink=sink, slots=1, stop_grace_s=0.05)
    spec = make_spec("ignores_abort_in_a_thread")
    try:
        executor.submit(spec)
        await sink.started(spec.key)
        await executor.stop_all(timeout_s=0.1)
        outcome = await sink.outcome(spec.key)
        assert isinstance(outcome, Failed)
        assert outcome.error.type == "WorkerShutdown"
        assert executor.in_flight == 0
    finally:
        release.set()  # lets the thread end with the test
        await executor.close()


async def test_a_sync_handler_ignoring_its_abort_past_the_grace_is_reported_as_such(
    sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    def ignores_its_deadline(ctx: TaskContext) -> None:
        release.wait(30)

    registry = HandlerRegistry()
    registry.register(ignores_its_deadline)
    executor = Executor(registry=registry, sink=sink, slots=1, stop_grace_s=0.05)
    spec = make_spec("ignores_its_deadline", timeout_s=0.05)
    try:
        executor.submit(spec)
        await sink.started(spec.key)
        warned = asyncio.Event()  # the warning is logged on this loop's thread, at the end of the grace
        catcher = logging.Handler()
        catcher.emit = lambda record: warned.set() if "ignored its abort" in record.getMessage() else None  # type: ignore[method-assign]
        logging.getLogger("taskwire.worker.executor").addHandler(catcher)
        try:
            await asyncio.wait_for(warned.wait(), 5)
        finally:
            logging.getLogger("taskwire.worker.executor").removeHandler(catcher)
        assert "handler 'ignores_its_deadline' of attempt" in caplog.text
    finally:
        release.set()
    outcome = await sink.outcome(spec.key)
    assert isinstance(outcome, Failed)
    assert outcome.error.type == "TimeoutError"
    assert "; it ignored its abort signal for 0." in outcome.error.message, outcome.error
    await executor.close()


async def test_abort_of_an_attempt_that_is_not_running_is_refused(executor: Executor) -> None:
    assert not executor.abort(make_spec("returns_input").key, AbortReason.CANCELLED)


async def test_wait_idle(executor: Executor, sink: RecordingSink) -> None:
    assert await executor.wait_idle(0)
    spec = make_spec("waits_for_abort")
    executor.submit(spec)
    assert not await executor.wait_idle(0.01)
    executor.abort(spec.key, AbortReason.CANCELLED)
    assert await executor.wait_idle(5)


async def test_sync_handlers_one_after_another_run_in_one_thread_named_for_each_attempt(
    executor: Executor, sink: RecordingSink
) -> None:
    seen: list[list[object]] = []
    for attempt in (1, 2):
        spec = make_spec("sync_names_its_thread", task_run_id=f"run-{attempt}")
        executor.submit(spec)
        outcome = await sink.outcome(spec.key)
        assert isinstance(outcome, Completed)
        assert isinstance(outcome.value, list)
        seen.append(outcome.value)
        # The thread is kept for the next handler once this one has returned: wait until it waits.
        threads = executor._handler_threads
        assert threads is not None
        await asyncio.to_thread(
            wait_for, lambda pool=threads: pool.waiting, timeout_s=5, what="the handler's thread to wait"
        )
    assert seen[0][0] == seen[1][0], "the second sync handler did not reuse the first one's thread"
    assert [name for _, name, _ in seen] == [
        "taskwire-sync_names_its_thread-run-1#1",
        "taskwire-sync_names_its_thread-run-2#1",
    ]
    assert all(daemon for _, _, daemon in seen)


def test_slots_must_be_positive(sink: RecordingSink) -> None:
    with pytest.raises(ValueError, match="slots"):
        Executor(registry=handlers, sink=sink, slots=0)
