"""WaitExecutions at the edge: a batch larger than a page is split into several responses that count down
`remaining`, and the deadline ends the responses with WaitDeadline after what had finished."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from taskwire.server import wire
from taskwire.server._wait_wire import WaitDeadline, wait_responses
from taskwire.server.store import ExecutionSnapshot
from tests.unit.client.records import snapshot, task_run


def finished(execution_id: str, output_bytes: int = 10) -> ExecutionSnapshot:
    run = task_run(execution_id=execution_id, output="x" * output_bytes)
    client_side = snapshot(execution_id=execution_id)
    return ExecutionSnapshot(client_side.execution, (run,))


async def test_a_batch_past_the_page_budget_is_split_and_remaining_counts_down() -> None:
    big = wire.PAGE_BUDGET_BYTES // 3 + 1  # three of them do not fit in one page, two do

    async def batches() -> AsyncGenerator[list[ExecutionSnapshot], None]:
        yield [finished("a", 10)]
        yield [finished(name, big) for name in "bcd"]

    responses = [r async for r in wait_responses(batches(), total=4, deadline=None)]
    assert [[e.id for e in r.executions] for r in responses] == [["a"], ["b", "c"], ["d"]]
    assert [r.remaining for r in responses] == [3, 1, 0]


async def test_the_deadline_ends_it_after_what_finished_and_closes_the_batches() -> None:
    closed = asyncio.Event()

    async def batches() -> AsyncGenerator[list[ExecutionSnapshot], None]:
        try:
            yield [finished("a")]
            await asyncio.Event().wait()  # nothing else finishes
            yield []
        finally:
            closed.set()

    received: list[list[str]] = []

    async def receive() -> None:
        deadline = asyncio.get_running_loop().time() + 0.05
        async for response in wait_responses(batches(), total=3, deadline=deadline):
            received.append([e.id for e in response.executions])

    with pytest.raises(WaitDeadline, match=r"^2 of 3 executions had not finished by the call's deadline$"):
        await receive()
    assert received == [["a"]]
    assert closed.is_set()
