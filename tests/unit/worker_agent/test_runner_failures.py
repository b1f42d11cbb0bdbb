"""A runner that fails, rather than the handler it runs: the attempt still ends, with that error, and frees its
slot (it would otherwise stay in flight for ever, listed in every heartbeat)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from taskwire.worker import Failed, HandlerHarness, TaskContext
from taskwire.worker import _runners as runners
from taskwire.worker._handler_threads import HandlerThreads
from taskwire.worker._outcome import HandlerResult


def sync_returns(ctx: TaskContext) -> str:
    return "never seen"


async def async_returns(ctx: TaskContext) -> str:
    return "never seen"


def _no_thread(self: HandlerThreads, name: str, call: Callable[[], None]) -> None:
    raise RuntimeError("can't start new thread")


def _sync_call_fails(fn: object, build_context: object) -> HandlerResult:
    raise RuntimeError("the sync call failed outside it")


async def _async_call_fails(fn: object, build_context: object) -> HandlerResult:
    raise RuntimeError("the async call failed outside it")


@pytest.mark.parametrize(
    ("handler", "target", "replacement", "message"),
    [
        (sync_returns, (HandlerThreads, "run"), _no_thread, "can't start new thread"),
        (sync_returns, (runners, "call_sync_handler"), _sync_call_fails, "the sync call failed outside it"),
        (async_returns, (runners, "call_async_handler"), _async_call_fails, "the async call failed outside it"),
    ],
    ids=["no-thread-to-start", "sync-call", "async-task"],
)
async def test_an_attempt_whose_runner_fails_ends_with_the_error_and_frees_its_slot(
    monkeypatch: pytest.MonkeyPatch,
    handler: Callable[[TaskContext], object],
    target: tuple[object, str],
    replacement: object,
    message: str,
) -> None:
    monkeypatch.setattr(*target, replacement)
    async with HandlerHarness(slots=1) as harness:
        outcome = await harness.run(handler, outcome_timeout_s=5)
        assert isinstance(outcome, Failed), outcome
        assert (outcome.error.type, outcome.error.message) == ("RuntimeError", message)
        assert outcome.error.retryable
        assert harness.executor.in_flight == 0
