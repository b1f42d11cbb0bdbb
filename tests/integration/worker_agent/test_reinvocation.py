"""An attempt the server hands out again while this worker still stops its fenced copy (after a server
crash, before the dispatch was stored): never dropped in silence, it runs once that copy has stopped, and
the heartbeats list exactly what the server must consider held."""

from __future__ import annotations

import json

from taskwire.conformance._scripted import ScriptedServer, ref_of, running_of
from taskwire.v1 import worker_service_pb2 as wpb
from tests.integration.worker_agent.conftest import MakeWorker


def _again(ref: tuple[str, int], handler: str, input: object) -> wpb.ServerMessage:
    invocation = wpb.Invocation(
        ref=wpb.AttemptRef(task_run_id=ref[0], attempt=ref[1]),
        execution_id="exec-1",
        task_id=handler,
        handler=handler,
    )
    invocation.input.data = json.dumps(input).encode()
    invocation.input.content_type = "application/json"
    return wpb.ServerMessage(invocation=invocation)


async def test_an_attempt_invoked_again_while_its_fenced_copy_stops_runs_after_it(
    scripted: ScriptedServer, make_worker: MakeWorker
) -> None:
    await make_worker().start()
    session, _ = await scripted.connect(heartbeat_interval_s=0.1)
    # A handler that ignores its abort signal: its copy keeps running after the fence.
    ref = session.invoke("spin", {"seconds": 1.0})
    assert ref_of(await session.next("started")) == ref
    session.cancel(ref, wpb.CANCEL_REASON_LEASE_LOST)
    session.send(_again(ref, "echo", {"second": True}))

    # Meanwhile the heartbeats list the attempt: the server handed it out and it will run here.
    heartbeat = await session.wait_for(lambda m: m.HasField("heartbeat") and bool(running_of(m)))
    assert running_of(heartbeat) == {ref}
    assert ref_of(await session.next("started", timeout_s=10)) == ref
    completed = (await session.next("completed")).completed
    assert json.loads(completed.output.data) == {"second": True}
    # The fenced copy said nothing after its fence: one start and one completion, both the new copy's.
    assert session.about(ref) == ["started", "started", "completed"]


async def test_an_attempt_rejected_at_a_reconnect_and_invoked_again_runs_after_its_old_copy(
    scripted: ScriptedServer, make_worker: MakeWorker
) -> None:
    await make_worker().start()
    first, _ = await scripted.connect()
    ref = first.invoke("spin", {"seconds": 1.0})
    await first.next("started")
    first.close()

    second = await scripted.next_session()
    hello = (await second.next("hello")).hello
    assert running_of(wpb.WorkerMessage(hello=hello)) == {ref}
    second.welcome(rejected=[ref], then=[_again(ref, "echo", {"again": 1})])
    assert ref_of(await second.next("started", timeout_s=10)) == ref
    completed = (await second.next("completed")).completed
    assert json.loads(completed.output.data) == {"again": 1}
    assert second.about(ref) == ["started", "completed"]
