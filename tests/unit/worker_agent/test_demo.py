"""The demo handlers behave as documented."""

from __future__ import annotations

import pytest

from taskwire.worker import AbortReason, Cancelled, Completed, Failed, HandlerHarness, demo


async def test_echo_returns_its_input() -> None:
    async with HandlerHarness() as harness:
        outcome = await harness.run(demo.echo, {"a": [1, None]}, outcome_timeout_s=5)
    assert isinstance(outcome, Completed)
    assert outcome.value == {"a": [1, None]}


async def test_sleep_reports_every_tenth_and_finishes() -> None:
    async with HandlerHarness() as harness:
        run = harness.start(demo.sleep, {"seconds": 0.05})
        outcome = await run.outcome(timeout_s=5)
    assert isinstance(outcome, Completed)
    assert outcome.value == {"slept_s": 0.05}
    assert [round(p.fraction, 1) for p in run.progress] == [n / 10 for n in range(1, 11)]


async def test_sleep_stops_promptly_on_abort() -> None:
    async with HandlerHarness(stop_grace_s=30) as harness:
        run = harness.start(demo.sleep, {"seconds": 3600})
        await run.wait_started(timeout_s=5)
        run.abort(AbortReason.CANCELLED)
        # A grace of 30 s means no hard stop: only the handler's own wait can end it this fast.
        assert await run.outcome(timeout_s=2) == Cancelled(reason=AbortReason.CANCELLED)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ("DemoError", "the demo handler failed as asked", True)),
        ({"message": "m", "retryable": False, "type": "ValueError"}, ("ValueError", "m", False)),
    ],
)
async def test_fail_raises_as_asked(params: dict[str, object], expected: tuple[str, str, bool]) -> None:
    async with HandlerHarness() as harness:
        outcome = await harness.run(demo.fail, params, outcome_timeout_s=5)
    assert isinstance(outcome, Failed)
    assert (outcome.error.type, outcome.error.message, outcome.error.retryable) == expected


async def test_progress_reports_steps_with_a_log_line_each() -> None:
    async with HandlerHarness() as harness:
        run = harness.start(demo.progress, {"steps": 4, "interval": 0})
        outcome = await run.outcome(timeout_s=5)
    assert isinstance(outcome, Completed)
    assert [p.fraction for p in run.progress] == [0.25, 0.5, 0.75, 1.0]
    assert [line.text for line in run.logs] == [f"step {n} of 4" for n in range(1, 5)]


async def test_spin_returns_after_its_time() -> None:
    async with HandlerHarness() as harness:
        outcome = await harness.run(demo.spin, {"seconds": 0.01}, outcome_timeout_s=5)
    assert isinstance(outcome, Completed)


async def test_sync_sleep_stops_on_abort_in_its_thread() -> None:
    async with HandlerHarness(stop_grace_s=30) as harness:
        run = harness.start(demo.sync_sleep, {"seconds": 3600})
        await run.wait_started(timeout_s=5)
        run.abort(AbortReason.LEASE_LOST)
        assert await run.outcome(timeout_s=2) == Cancelled(reason=AbortReason.LEASE_LOST)


async def test_bad_input_is_explained() -> None:
    async with HandlerHarness() as harness:
        outcome = await harness.run(demo.sleep, {"seconds": "soon"}, outcome_timeout_s=5)
    assert isinstance(outcome, Failed)
    assert "'seconds' must be a non-negative number" in outcome.error.message
