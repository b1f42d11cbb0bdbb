"""A handler for the flow-control tests: rate limited by a (pretend) remote side on its first attempts.

Serve it with `taskwire-worker --handlers tests.integration.flow.handlers` from the repository root.
"""

from __future__ import annotations

from taskwire.worker import RateLimited, TaskContext, handler


@handler("flow.remote")
async def remote(ctx: TaskContext) -> dict[str, int]:
    """Input ``{"limited": n, "retry_after": s}``: attempts up to n raise RateLimited(retry_after=s)."""
    params = ctx.input if isinstance(ctx.input, dict) else {}
    if ctx.attempt <= int(params.get("limited", 0)):
        raise RateLimited("429 Too Many Requests", retry_after=float(params.get("retry_after", 0.5)))
    return {"attempt": ctx.attempt}
