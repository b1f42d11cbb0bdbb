"""Process isolation: each attempt in a child process; one that ignores its abort is terminated."""

from __future__ import annotations

import time

import pytest

from taskwire.worker import AbortReason, Cancelled, Completed, Failed, HandlerHarness, Isolation, TaskContext, demo


def exits_abruptly(ctx: TaskContext) -> None:
    import os

    os._exit(3)


async def test_a_handler_runs_in_a_child_and_reports_back() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        run = harness.start(demo.progress, {"steps": 2, "interval": 0})
        outcome = await run.outcome(timeout_s=30)
        assert isinstance(outcome, Completed)
        assert outcome.value == {"steps": 2}
        assert run.started
        assert [p.fraction for p in run.progress] == [0.5, 1.0]
        assert [line.text for line in run.logs] == ["step 1 of 2", "step 2 of 2"]


async def test_a_cooperative_handler_stops_on_its_signal() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS, stop_grace_s=10) as harness:
        run = harness.start(demo.sync_sleep, {"seconds": 60})
        await run.wait_started(timeout_s=30)
        run.abort(AbortReason.UPSTREAM_FAILED, "a sibling failed")
        assert await run.outcome(timeout_s=10) == Cancelled(
            reason=AbortReason.UPSTREAM_FAILED, message="a sibling failed"
        )


@pytest.mark.parametrize("reason", [AbortReason.CANCELLED, AbortReason.SHUTDOWN])
async def test_spin_is_terminated_within_the_grace(reason: AbortReason) -> None:
    grace_s = 0.3
    async with HandlerHarness(isolation=Isolation.PROCESS, stop_grace_s=grace_s, kill_grace_s=0.5) as harness:
        run = harness.start(demo.spin, {"seconds": 120})
        await run.wait_started(timeout_s=30)
        aborted_at = time.monotonic()
        run.abort(reason)
        outcome = await run.outcome(timeout_s=10)
        stopped_after_s = time.monotonic() - aborted_at
    if reason is AbortReason.SHUTDOWN:
        assert isinstance(outcome, Failed)
        assert outcome.error.type == "WorkerShutdown"
    else:
        assert outcome == Cancelled(reason=reason)
    # The grace, then SIGTERM; the busy loop does not block signals, so no kill should be needed.
    assert grace_s <= stopped_after_s < grace_s + 2.0


async def test_the_local_deadline_stops_a_spinning_child() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS, stop_grace_s=0.1) as harness:
        outcome = await harness.run(demo.spin, {"seconds": 120}, timeout_s=0.5, outcome_timeout_s=30)
    assert isinstance(outcome, Failed)
    assert outcome.timed_out


async def test_a_child_that_dies_fails_the_attempt() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        outcome = await harness.run(exits_abruptly, outcome_timeout_s=30)
    assert isinstance(outcome, Failed)
    assert outcome.error.type == "HandlerProcessDied"
    assert "code 3" in outcome.error.message
    assert outcome.error.retryable


async def test_errors_cross_the_process_boundary() -> None:
    async with HandlerHarness(isolation=Isolation.PROCESS) as harness:
        outcome = await harness.run(
            demo.fail, {"message": "no disk", "retryable": False, "type": "DiskFull"}, outcome_timeout_s=30
        )
    assert isinstance(outcome, Failed)
    assert (outcome.error.type, outcome.error.message, outcome.error.retryable) == ("DiskFull", "no disk", False)
    assert "DiskFull" in outcome.error.traceback
