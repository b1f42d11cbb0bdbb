"""Handlers that time themselves: ``taskwire-worker --handlers bench.handlers``.

They read ``CLOCK_MONOTONIC``, which every process on one Linux host shares, so a time taken here can
be subtracted from one the benchmark client took (``bench._common.monotonic_s`` reads the same clock).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from taskwire.worker import TaskContext, handler


def monotonic_s() -> float:
    """Seconds on the host-wide monotonic clock (what ``time.monotonic()`` reads on Linux)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def _params(ctx: TaskContext) -> Mapping[str, object]:
    value = ctx.input
    if not isinstance(value, Mapping):
        raise TypeError(f"{ctx.handler} expects a JSON object as input, got {type(value).__name__}")
    return value


@handler("echo_sync")
def echo_sync(ctx: TaskContext) -> object:
    """The demo's ``echo`` as a plain function, run in the worker's handler threads: returns its input."""
    return ctx.input


@handler("noop_timed")
async def noop_timed(ctx: TaskContext) -> dict[str, float]:
    """Does nothing; its output is the monotonic time at which it started."""
    return {"started_s": monotonic_s()}


@handler("abort_timed")
async def abort_timed(ctx: TaskContext) -> None:
    """Input ``{"dir": path}``: reports progress once (so a watcher knows it runs), then waits for its
    abort signal and writes the monotonic time it fired to ``<path>/<execution id>.abort``.
    """
    directory = Path(str(_params(ctx)["dir"]))
    ctx.progress(0.0, "waiting for the abort signal")
    await ctx.abort.wait()
    fired_s = monotonic_s()
    (directory / f"{ctx.execution_id}.abort").write_text(repr(fired_s))
    ctx.abort.raise_if_aborted()


@handler("pause")
async def pause(ctx: TaskContext) -> None:
    """Input ``{"ms": n}``: takes n milliseconds (a stand-in for real work), stopping early on abort."""
    milliseconds = _params(ctx).get("ms", 10)
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int | float):
        raise TypeError(f"'ms' must be a number, got {milliseconds!r}")
    if await ctx.abort.wait(float(milliseconds) / 1000):
        ctx.abort.raise_if_aborted()
