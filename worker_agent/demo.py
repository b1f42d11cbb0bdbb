"""Demo handlers: ``taskwire-worker --handlers taskwire.worker.demo``.

They double as examples of the handler API and as fixtures for taskwire's own tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from ._context import TaskContext
from ._registry import handler


def _params(ctx: TaskContext) -> Mapping[str, object]:
    value = ctx.input
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{ctx.handler} expects a JSON object as input, got {type(value).__name__}")
    return value


def _number(params: Mapping[str, object], key: str, default: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key!r} must be a non-negative number, got {value!r}")
    return float(value)


@handler("echo")
async def echo(ctx: TaskContext) -> object:
    """Returns its input unchanged."""
    return ctx.input


@handler("sleep")
async def sleep(ctx: TaskContext) -> dict[str, float]:
    """Input ``{"seconds": s}``: waits s seconds, reporting progress every tenth; stops at once on abort."""
    seconds = _number(_params(ctx), "seconds", 1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    steps = 10
    for step in range(1, steps + 1):
        # Waiting on the signal (not sleeping) is what makes an abort take effect immediately.
        if await ctx.abort.wait(max(0.0, started + seconds * step / steps - loop.time())):
            ctx.abort.raise_if_aborted()
        ctx.progress(step / steps, f"slept {seconds * step / steps:g}s of {seconds:g}s")
    return {"slept_s": seconds}


@handler("fail")
async def fail(ctx: TaskContext) -> None:
    """Input ``{"message": str, "retryable": bool, "type": str}``: raises an error of that type name."""
    params = _params(ctx)
    message = str(params.get("message", "the demo handler failed as asked"))
    retryable = bool(params.get("retryable", True))
    type_name = str(params.get("type", "DemoError"))
    if not type_name.isidentifier():
        raise ValueError(f"'type' must be a Python identifier, got {type_name!r}")
    # A class made on the spot, so the reported error type is exactly the requested name.
    error_class = type(type_name, (Exception,), {"retryable": retryable})
    raise error_class(message)


@handler("progress")
async def progress(ctx: TaskContext) -> dict[str, int]:
    """Input ``{"steps": n, "interval": s}``: n progress reports s seconds apart, each with a log line."""
    params = _params(ctx)
    steps = int(_number(params, "steps", 5))
    interval_s = _number(params, "interval", 0.1)
    for step in range(1, steps + 1):
        if await ctx.abort.wait(interval_s):
            ctx.abort.raise_if_aborted()
        ctx.logger.info("step %d of %d", step, steps)
        ctx.progress(step / steps if steps else 1.0, f"step {step} of {steps}", {"step": step})
    return {"steps": steps}


@handler("spin")
def spin(ctx: TaskContext) -> dict[str, float]:
    """Input ``{"seconds": s}``: burns CPU for s seconds and never looks at its abort signal.

    Only process isolation can stop it early: that is what it is for.
    """
    seconds = _number(_params(ctx), "seconds", 1.0)
    deadline = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < deadline:
        spins += 1
    return {"spun_s": seconds}


@handler("sync_sleep")
def sync_sleep(ctx: TaskContext) -> dict[str, float]:
    """Input ``{"seconds": s}``: a sync handler that blocks on its abort signal for s seconds."""
    seconds = _number(_params(ctx), "seconds", 1.0)
    if ctx.abort.wait(seconds):
        ctx.abort.raise_if_aborted()
    return {"slept_s": seconds}
