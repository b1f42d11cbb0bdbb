"""Handlers of the workflow tests: each uses what the tasks before it returned."""

from __future__ import annotations

import os

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


@handler("flow.step")
def step(ctx: TaskContext) -> dict[str, object]:
    """Appends its task id to the file `log` (so runs can be counted), fails while `needs` does not exist,
    and returns its task id with what its upstream tasks returned."""
    params = ctx.input
    assert isinstance(params, dict)
    with open(params["log"], "a", encoding="utf-8") as log:
        log.write(f"{ctx.task_id}\n")
    needs = params.get("needs")
    if needs is not None and not os.path.exists(needs):
        raise RuntimeError(f"{needs} is missing")
    return {"task": ctx.task_id, "upstream": dict(ctx.upstream)}
