"""A handler's own mistakes end its attempt with a clear error, and the worker goes on serving the next."""

from __future__ import annotations

import pytest

from taskwire.common import Payload
from taskwire.worker import Completed, Failed, HandlerHarness, TaskContext


class Unprintable(Exception):
    """An exception whose message cannot be read, nor whether it is retryable."""

    def __str__(self) -> str:
        raise RuntimeError("no message")

    @property
    def retryable(self) -> bool:
        raise RuntimeError("no answer")


def raises_unprintable(ctx: TaskContext) -> None:
    raise Unprintable


async def raises_unprintable_async(ctx: TaskContext) -> None:
    raise Unprintable


async def interrupts(ctx: TaskContext) -> None:
    raise KeyboardInterrupt


async def ok(ctx: TaskContext) -> str:
    return "ok"


def ok_sync(ctx: TaskContext) -> str:
    return "ok"


def text_for_bytes(ctx: TaskContext) -> Payload:
    return Payload(data="not bytes")  # type: ignore[arg-type]


def not_json(ctx: TaskContext) -> Payload:
    return Payload(b"{not json", "application/json")


def too_deep(ctx: TaskContext) -> list[object]:
    value: list[object] = []
    for _ in range(100_000):
        value = [value]
    return value


def reports_oddly(ctx: TaskContext) -> str:
    try:
        ctx.progress(0.5, 123)  # type: ignore[arg-type]
    except TypeError as error:
        refused = str(error)
    ctx.progress(0.6, "half \udc80 way")
    ctx.logger.warning("a lone \ud800 surrogate")
    return refused


@pytest.mark.parametrize("handler", [raises_unprintable, raises_unprintable_async, interrupts])
async def test_an_exception_that_cannot_be_read_or_an_interrupt_fails_only_its_attempt(handler: object) -> None:
    async with HandlerHarness(slots=1) as harness:
        failures = []
        for _ in range(2):  # the one slot is free again each time
            outcome = await harness.run(handler, outcome_timeout_s=10)  # type: ignore[arg-type]
            assert isinstance(outcome, Failed), outcome
            failures.append(outcome.error)
        assert isinstance(await harness.run(ok, outcome_timeout_s=10), Completed)
        assert isinstance(await harness.run(ok_sync, outcome_timeout_s=10), Completed)
    error = failures[-1]
    if handler is interrupts:
        assert error.type == "KeyboardInterrupt"
    else:
        assert error.type == "Unprintable"
        assert error.message == "(its message could not be read: RuntimeError in Unprintable.__str__)"
        assert error.retryable  # what it could not say is taken as the default


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (text_for_bytes, "handler returned a Payload whose data is not bytes (str)"),
        (not_json, "handler returned a Payload marked JSON that is not valid JSON"),
        (too_deep, "handler returned a value that cannot be encoded as JSON (list)"),
    ],
)
async def test_an_output_the_wire_cannot_carry_fails_for_good(handler: object, message: str) -> None:
    async with HandlerHarness() as harness:
        outcome = await harness.run(handler, outcome_timeout_s=10)  # type: ignore[arg-type]
    assert isinstance(outcome, Failed), outcome
    assert outcome.error.type == "OutputEncodingError"
    assert outcome.error.message.startswith(message)
    assert not outcome.error.retryable


async def test_progress_and_logs_are_checked_and_made_sendable() -> None:
    async with HandlerHarness() as harness:
        run = harness.start(reports_oddly)
        outcome = await run.outcome(timeout_s=10)
    assert outcome == Completed(output=Payload(b'"progress message must be a str, got int 123"'))
    assert [update.message for update in run.progress] == ["half ? way"]
    assert [line.text for line in run.logs] == ["a lone ? surrogate"]
