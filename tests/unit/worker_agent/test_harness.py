"""The handler harness: what handler authors test with."""

from __future__ import annotations

import asyncio

import pytest

from taskwire.worker import (
    AbortReason,
    Cancelled,
    Completed,
    Failed,
    HandlerHarness,
    Payload,
    TaskContext,
    demo,
    handler,
)
from taskwire.worker._executor import Executor


@handler("test-harness-greet")
async def greet(ctx: TaskContext) -> str:
    ctx.logger.info("greeting %s", ctx.input)
    return f"hello {ctx.input}"


async def test_start_and_outcome() -> None:
    async with HandlerHarness() as harness:
        run = harness.start(greet, "ada")
        outcome = await run.outcome(timeout_s=5)
    assert isinstance(outcome, Completed)
    assert outcome.value == "hello ada"
    assert run.handler == "test-harness-greet"  # the decorator's name, not the function's
    assert [line.text for line in run.logs] == ["greeting ada"]
    assert run.done


async def test_start_by_registered_name() -> None:
    async with HandlerHarness() as harness:
        outcome = await harness.run("test-harness-greet", "bob", outcome_timeout_s=5)
    assert isinstance(outcome, Completed)
    assert outcome.value == "hello bob"


async def test_an_unknown_name_is_a_lookup_error() -> None:
    async with HandlerHarness() as harness:
        with pytest.raises(LookupError):
            harness.start("test-harness-nobody")


async def test_abort_a_started_run() -> None:
    async with HandlerHarness() as harness:
        run = harness.start(demo.sleep, {"seconds": 60})
        await run.wait_started(timeout_s=5)
        assert run.abort(AbortReason.EXECUTION_TIMED_OUT)
        assert await run.outcome(timeout_s=5) == Cancelled(reason=AbortReason.EXECUTION_TIMED_OUT)
        assert not run.abort()  # already over


async def test_abort_after_the_first_progress_report() -> None:
    async with HandlerHarness() as harness:
        run = harness.start(demo.progress, {"steps": 100, "interval": 0.01})
        await run.wait_for_progress(1, timeout_s=5)
        run.abort()
        assert await run.outcome(timeout_s=5) == Cancelled(reason=AbortReason.CANCELLED)
        assert 1 <= len(run.progress) < 100


async def test_progress_is_recorded_and_awaitable() -> None:
    async with HandlerHarness() as harness:
        run = harness.start(demo.progress, {"steps": 3, "interval": 0})
        third = await run.wait_for_progress(3, timeout_s=5)
        assert third.fraction == 1.0
        assert await run.wait_for_log(3, timeout_s=5) == run.logs[2]
        await run.outcome(timeout_s=5)
    assert [p.details for p in run.progress] == [{"step": 1}, {"step": 2}, {"step": 3}]


async def test_waiting_for_more_progress_than_a_run_reports_fails_clearly() -> None:
    async with HandlerHarness() as harness:
        run = harness.start(demo.echo, 1)
        with pytest.raises(AssertionError, match="0 progress reports"):
            await run.wait_for_progress(1, timeout_s=5)


async def test_outcome_times_out() -> None:
    async with HandlerHarness(stop_grace_s=0.05) as harness:
        run = harness.start(demo.sleep, {"seconds": 60})
        with pytest.raises(TimeoutError):
            await run.outcome(timeout_s=0.01)


async def test_timeout_s_is_the_workers_local_deadline() -> None:
    async with HandlerHarness() as harness:
        outcome = await harness.run(demo.sync_sleep, {"seconds": 60}, timeout_s=0.05, outcome_timeout_s=5)
    assert isinstance(outcome, Failed)
    assert outcome.timed_out


async def test_closing_the_harness_shuts_running_handlers_down() -> None:
    harness = HandlerHarness()
    run = harness.start(demo.sleep, {"seconds": 60})
    await run.wait_started(timeout_s=5)
    await harness.close()
    await harness.close()  # idempotent
    outcome = await run.outcome(timeout_s=5)
    assert isinstance(outcome, Failed)
    assert outcome.error.type == "WorkerShutdown"


async def test_raw_payload_input() -> None:
    async with HandlerHarness() as harness:
        outcome = await harness.run(demo.echo, Payload(data=b"\x00", content_type="application/octet-stream"))
    assert isinstance(outcome, Failed)  # bytes are not JSON: returning them is an encoding error
    assert outcome.error.type == "OutputEncodingError"


async def test_starting_the_same_attempt_twice_returns_the_same_run() -> None:
    async with HandlerHarness() as harness:
        first = harness.start(demo.sleep, {"seconds": 60}, task_run_id="run-1")
        assert harness.start(demo.sleep, {"seconds": 60}, task_run_id="run-1") is first
        assert harness.executor.in_flight == 1
        first.abort()
        await first.outcome(timeout_s=5)


async def test_the_harness_uses_the_worker_executor() -> None:
    async with HandlerHarness() as harness:
        assert isinstance(harness.executor, Executor)


def test_run_sync_from_plain_code() -> None:
    outcome = HandlerHarness().run_sync(demo.fail, {"message": "nope", "retryable": False})
    assert isinstance(outcome, Failed)
    assert (outcome.error.type, outcome.error.message, outcome.error.retryable) == ("DemoError", "nope", False)


async def test_many_runs_at_once() -> None:
    async with HandlerHarness(slots=10) as harness:
        runs = [harness.start(demo.echo, n) for n in range(10)]
        outcomes = await asyncio.gather(*(run.outcome(timeout_s=5) for run in runs))
    assert [o.value for o in outcomes if isinstance(o, Completed)] == list(range(10))
