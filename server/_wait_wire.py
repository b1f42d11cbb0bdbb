"""WaitExecutions at the edge: the request's ids checked, and the engine's batches of finished executions
sent as responses, each within what any gRPC client accepts, until the last or the call's deadline.

May use: the engine's batches (domain snapshots), `taskwire.server.wire`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

from taskwire.v1 import task_service_pb2 as tpb

from . import wire
from .domain import TaskwireError, ValidationError
from .store import ExecutionSnapshot

MAX_WAIT_IDS = 10_000  # executions one WaitExecutions call waits for
_EXECUTION_ID = re.compile(r"[0-9a-f]{32}")


class WaitDeadline(TaskwireError):
    """The call's deadline came before every execution it waits for had finished."""

    status_name = "DEADLINE_EXCEEDED"


def wait_ids(execution_ids: Sequence[str]) -> list[str]:
    """The ids of a WaitExecutions request, checked: some, not too many, each an execution id, each once."""
    if not execution_ids:
        raise ValidationError("execution_ids", "at least one execution id is required")
    if len(execution_ids) > MAX_WAIT_IDS:
        raise ValidationError("execution_ids", f"at most {MAX_WAIT_IDS} per call, got {len(execution_ids)}")
    first: dict[str, int] = {}
    for index, execution_id in enumerate(execution_ids):
        if not _EXECUTION_ID.fullmatch(execution_id):
            raise ValidationError(f"execution_ids[{index}]", f"{execution_id!r} is not an execution id (32 hex digits)")
        earlier = first.setdefault(execution_id, index)
        if earlier != index:
            raise ValidationError(
                f"execution_ids[{index}]", f"{execution_id} is given twice (also execution_ids[{earlier}])"
            )
    return list(execution_ids)


async def wait_responses(
    batches: AsyncGenerator[list[ExecutionSnapshot], None], *, total: int, deadline: float | None
) -> AsyncIterator[tpb.WaitExecutionsResponse]:
    """One response per batch (more for a batch past the page budget); WaitDeadline once the loop's clock
    reaches `deadline` first. Closes `batches` however it ends (the caller may go away)."""
    remaining = total
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    batch = await anext(batches)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise WaitDeadline(
                    f"{remaining} of {total} executions had not finished by the call's deadline"
                ) from None
            executions = [wire.execution_to_proto(s.execution, s.task_runs) for s in batch]
            while True:
                fitting = wire.fitting(executions, wire.PAGE_BUDGET_BYTES) if executions else 0
                remaining -= fitting
                yield tpb.WaitExecutionsResponse(executions=executions[:fitting], remaining=remaining)
                executions = executions[fitting:]
                if not executions:
                    break
    finally:
        await batches.aclose()
