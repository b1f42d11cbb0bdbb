"""The handlers the conformance kit invokes, for the Python agent:
`taskwire-worker --handlers taskwire.conformance.handlers`.

A worker in another language serves the same names with the same behaviour (docs/conformance.md).
"""

from __future__ import annotations

import time

from taskwire.worker import TaskContext, handler


class ConformanceError(Exception):
    """What `conformance.fail` raises; `retryable` as its input says."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@handler("conformance.echo")
async def echo(ctx: TaskContext) -> object:
    """Returns its input (after the worker replaced any {"$from": ...} reference in it)."""
    return ctx.input


@handler("conformance.sleep")
async def sleep(ctx: TaskContext) -> dict[str, float]:
    """Waits `seconds` (input), or until its abort signal fires: then it stops at once."""
    seconds = float(ctx.input["seconds"])  # type: ignore[index]
    await ctx.abort.wait(seconds)
    return {"slept_s": seconds}


@handler("conformance.fail")
async def fail(ctx: TaskContext) -> None:
    """Raises ConformanceError(message), retryable as the input says."""
    params = ctx.input
    assert isinstance(params, dict)
    raise ConformanceError(str(params.get("message", "failed")), bool(params.get("retryable", True)))


@handler("conformance.progress")
async def progress(ctx: TaskContext) -> dict[str, bool]:
    """Reports progress 0.5 ("half way") and logs one line ("hello from the handler"), then returns."""
    ctx.progress(0.5, "half way")
    ctx.logger.info("hello from the handler")
    return {"ok": True}


@handler("conformance.block")
def block(ctx: TaskContext) -> dict[str, float]:
    """Blocks its thread for `seconds` (input) without yielding: heartbeats must go on meanwhile."""
    seconds = float(ctx.input["seconds"])  # type: ignore[index]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)
    return {"blocked_s": seconds}


__all__ = ["ConformanceError", "block", "echo", "fail", "progress", "sleep"]
