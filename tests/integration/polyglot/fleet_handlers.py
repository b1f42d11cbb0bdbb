"""The mixed fleet's handlers for the Python worker: the same names and behaviour as fleet_handlers.mjs."""

from __future__ import annotations

import os

from taskwire.worker import TaskContext, handler


class FlakyError(RuntimeError):
    """The first run of `fleet.flaky` raises this."""


@handler("fleet.flaky")
async def flaky(ctx: TaskContext) -> dict[str, object]:
    """Input ``{"marker": path}``: fails while the marker file does not exist (creating it), succeeds after."""
    params = ctx.input if isinstance(ctx.input, dict) else {}
    try:
        os.close(os.open(str(params["marker"]), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return {"attempt": ctx.attempt, "runtime": "python"}
    raise FlakyError("the first run fails (python)")


@handler("fleet.echo")
async def echo(ctx: TaskContext) -> dict[str, object]:
    """Returns its input, references replaced."""
    return {"input": ctx.input, "runtime": "python"}
