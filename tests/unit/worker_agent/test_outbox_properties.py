"""Property: whatever mix of failed and successful writes, reports go out once each, in order."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from taskwire.v1 import worker_service_pb2 as wpb
from taskwire.worker._executor import AttemptKey
from taskwire.worker._outbox import Outbox

# An operation: ("put", report?) queues a report (or a heartbeat), ("write", ok?) takes a batch and
# writes it successfully or not, ("reconnect", _) ends the session.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.booleans()),
        st.tuples(st.just("write"), st.booleans()),
        st.tuples(st.just("reconnect"), st.just(True)),
    ),
    max_size=60,
)


def report(number: int) -> wpb.WorkerMessage:
    return wpb.WorkerMessage(log=wpb.AttemptLog(ref=wpb.AttemptRef(task_run_id="run", attempt=1), text=str(number)))


@settings(max_examples=200, deadline=None)
@given(operations)
def test_reports_are_written_exactly_once_in_order(script: list[tuple[str, bool]]) -> None:
    asyncio.run(_play(script))


async def _play(script: list[tuple[str, bool]]) -> None:
    outbox = Outbox(max_batch=3)
    attempt = AttemptKey("run", 1)
    queued: list[str] = []
    written: list[str] = []
    for operation, flag in script:
        if operation == "put":
            if flag:
                queued.append(str(len(queued)))
                outbox.put(report(len(queued) - 1), attempt=attempt)
            else:
                outbox.put(wpb.WorkerMessage(heartbeat=wpb.Heartbeat()), session_only=True)
        elif operation == "write" and len(outbox) > 0:
            batch = await outbox.take()
            if flag:
                outbox.written(batch)
                written += [e.message.log.text for e in batch if e.message.WhichOneof("kind") == "log"]
            else:
                outbox.requeue(batch)
        elif operation == "reconnect":
            outbox.end_session()
    while len(outbox) > 0:  # finally a healthy stream drains everything
        batch = await outbox.take()
        outbox.written(batch)
        written += [e.message.log.text for e in batch if e.message.WhichOneof("kind") == "log"]
    assert written == queued
    assert await outbox.wait_flushed(0)
