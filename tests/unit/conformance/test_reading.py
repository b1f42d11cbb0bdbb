"""How a check reads a worker's reports: a report repeated after a broken stream is skipped only where the
check allows it (reports are at least once), and is a mismatch anywhere else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskwire.conformance._checks import _about
from taskwire.conformance._scripted import Mismatch, ScriptedSession
from taskwire.v1 import worker_service_pb2 as wpb

REF = wpb.AttemptRef(task_run_id="run-1", attempt=1)


async def session_that_read(*messages: wpb.WorkerMessage) -> ScriptedSession:
    async def frames() -> AsyncIterator[wpb.ConnectRequest]:
        yield wpb.ConnectRequest(messages=messages)

    session = ScriptedSession()
    await session._pump(frames())
    return session


def started() -> wpb.WorkerMessage:
    return wpb.WorkerMessage(started=wpb.AttemptStarted(ref=REF))


def completed() -> wpb.WorkerMessage:
    return wpb.WorkerMessage(completed=wpb.AttemptCompleted(ref=REF))


async def test_a_started_sent_again_on_the_next_stream_is_skipped_where_allowed() -> None:
    session = await session_that_read(started(), completed())
    message = await _about(session, ("run-1", 1), "completed", timeout_s=1, repeats=("started",))
    assert message.WhichOneof("kind") == "completed"


async def test_a_started_where_the_terminal_report_is_due_is_a_mismatch() -> None:
    session = await session_that_read(started(), completed())
    with pytest.raises(Mismatch, match="expected completed for \\('run-1', 1\\); got started"):
        await _about(session, ("run-1", 1), "completed", timeout_s=1)
