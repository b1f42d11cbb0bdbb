"""Handlers of the workflow tests: each uses what the tasks before it returned."""

from __future__ import annotations

from taskwire.worker import TaskContext, handler


@handler("flow.fetch")
def fetch(ctx: TaskContext) -> dict[str, object]:
    return {"items": [1, 2, 3], "source": ctx.input}


@handler("flow.double")
def double(ctx: TaskContext) -> list[int]:
    # The input's reference was replaced by the worker: {"numbers": [1, 2, 3]}.
    numbers = ctx.input["numbers"]  # type: ignore[index]
    return [2 * n for n in numbers]


@handler("flow.total")
def total(ctx: TaskContext) -> dict[str, object]:
    doubled = ctx.upstream["double"]
    assert isinstance(doubled, list)
    fetched = ctx.upstream.get("fetch")  # not a dependency of this task: not sent
    return {"total": sum(doubled), "saw_fetch": fetched is not None}


@handler("flow.echo")
def echo(ctx: TaskContext) -> object:
    return ctx.input
