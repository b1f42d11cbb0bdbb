"""Handlers that misbehave by blocking: ``taskwire-worker --handlers tests.integration.worker_agent.blocking``."""

from __future__ import annotations

import time

from taskwire.worker import TaskContext, handler


@handler("blocks.loop")
async def blocks_loop(ctx: TaskContext) -> str:
    """Input ``{"seconds": s}``: a blocking sleep inside an ``async def``, the mistake the worker must survive."""
    params = ctx.input if isinstance(ctx.input, dict) else {}
    time.sleep(float(params.get("seconds", 5.0)))  # noqa: ASYNC251 (the blocking call is the point)
    return "done"
