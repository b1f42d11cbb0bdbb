"""The worker against a scripted server: every exchange of the Connect stream protocol."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest

from taskwire.conformance._scripted import ScriptedServer, invocation, ref_of, running_of
from taskwire.v1 import worker_service_pb2 as wpb
from taskwire.worker import ConnectionLostError
from taskwire.worker._executor import AttemptKey
from tests.integration.worker_agent.conftest import MakeWorker

DEMO_HANDLERS = ["echo", "fail", "progress", "sleep", "spin", "sync_sleep"]


async def test_the_first_frame_is_the_hello(
    scripted: ScriptedServer, make_worker: MakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskwire.worker")
    worker = make_worker(slots=3, name="edge-1/42", instance_id="instance-1", labels={"zone": "a"})
    await worker.start()
    session = await scripted.next_session()
    hello = (await session.next("hello")).hello
    assert len(session.frames[0].messages) == 1
    assert (hello.name, hello.instance_id, hello.slots) == ("edge-1/42", "instance-1", 3)
    assert list(hello.handlers) == DEMO_HANDLERS
    assert dict(hello.labels) == {"zone": "a"}
    assert hello.agent_version.startswith("taskwire-worker/")
    assert list(hello.running_attempts) == []

    session.welcome(session_id="session-1")
    info = await worker.wait_connected(timeout_s=10)
    assert info.session_id == "session-1"
    assert any("connected" in r.getMessage() and "session-1" in r.getMessage() for r in caplog.records)


async def test_an_invocation_is_started_then_completed(scripted: ScriptedServer, make_worker: MakeWorker) -> None:
    await make_worker().start()
    session, _ = await scripted.connect()
    ref = session.invoke("echo", {"hello": "world"})
    assert ref_of(await session.next("started")) == ref
    completed = (await session.next("completed")).completed
    assert (completed.ref.task_run_id, completed.ref.attempt) == ref
    assert completed.output.content_type == "application/json"
    assert json.loads(completed.output.data) == {"hello": "world"}


async def test_progress_and_logs_are_reported(scripted: ScriptedServer, make_worker: MakeWorker) -> None:
    await make_worker().start()
    session, _ = await scripted.connect()
    ref = session.invoke("progress", {"steps": 2, "interval": 0})
    await session.next("started")
    log = (await session.next("log")).log
    assert (log.text, log.level) == ("step 1 of 2", 2)  # LOG_LEVEL_INFO
    progress = (await session.next("progress")).progress
    assert (progress.fraction, progress.message, dict(progress.details)) == (0.5, "step 1 of 2", {"step": 1.0})
    await session.next("log")
    await session.next("progress")
    await session.next("completed")
    assert session.about(ref) == ["started", "log", "progress", "log", "progress", "completed"]


async def test_a_handler_error_is_reported_as_failed(scripted: ScriptedServer, make_worker: MakeWorker) -> None:
    await make_worker().start()
    session, _ = await scripted.connect()
    session.invoke("fail", {"message": "disk full", "retryable": False, "type": "DiskFull"})
    await session.next("started")
    failed = (await session.next("failed")).failed
    assert (failed.error.type, failed.error.message, failed.error.retryable) == ("DiskFull", "disk full", False)
    assert "DiskFull: disk full" in failed.error.traceback
    assert not failed.timed_out


async def test_cancel_aborts_the_handler_and_is_acknowledged(scripted: ScriptedServer, make_worker: MakeWorker) -> None:
    worker = make_worker()
    await worker.start()
    session, _ = await scripted.connect()
    ref = session.invoke("sleep", {"seconds": 3600})
    await session.next("started")
    session.cancel(ref, wpb.CANCEL_REASON_UPSTREAM_FAILED, "a sibling failed")
    ack = (await session.next("cancel_acknowledged", skip=("heartbeat", "progress"))).cancel_acknowledged
    assert (ack.ref.task_run_id, ack.ref.attempt) == ref
    assert await worker.wait_idle(timeout_s=5)


async def test_a_lease_lost_cancel_stops_the_handler_silently(
    scripted: ScriptedServer, make_worker: MakeWorker
) -> None:
    worker = make_worker()
    await worker.start()
    session, _ = await scripted.connect(heartbeat_interval_s=0.05)
    ref = session.invoke("sleep", {"seconds": 3600})
    await session.next("started")
    session.cancel(ref, wpb.CANCEL_REASON_LEASE_LOST)
    assert await worker.wait_idle(timeout_s=5)
    # A heartbeat made after the handler stopped: anything the worker said about the attempt came before it.
    await session.wait_for(lambda m: m.WhichOneof("kind") == "heartbeat" and not running_of(m))
    assert session.about(ref) == ["started"]


async def test_a_cancel_for_an_unknown_attempt_is_acknowledged(
    scripted: ScriptedServer, make_worker: MakeWorker
) -> None:
    await make_worker().start()
    session, _ = await scripted.connect()
    session.cancel(("run-never-seen", 1))
    ack = (await session.next("cancel_acknowledged")).cancel_acknowledged
    assert ack.ref.task_run_id == "run-never-seen"


async def test_heartbeats_flow_and_list_running_attempts(scripted: ScriptedServer, make_worker: MakeWorker) -> None:
    await make_worker().start()
    session, _ = await scripted.connect(heartbeat_interval_s=0.05)
    ref = session.invoke("sleep", {"seconds": 3600})
    for _ in range(3):
        heartbeat = await session.wait_for(lambda m: m.WhichOneof("kind") == "heartbeat" and bool(running_of(m)))
        assert running_of(heartbeat) == {ref}


async def test_the_local_timeout_fails_the_attempt(scripted: ScriptedServer, make_worker: MakeWorker) -> None:
    await make_worker().start()
    session, _ = await scripted.connect()
    session.invoke("sleep", {"seconds": 3600}, timeout_s=0.1)
    await session.next("started")
    failed = (await session.next("failed", skip=("heartbeat", "progress"))).failed
    assert failed.timed_out
    assert (failed.error.type, failed.error.retryable) == ("TimeoutError", True)


async def test_slots_are_never_exceeded(scripted: ScriptedServer, make_worker: MakeWorker) -> None:
    worker = make_worker(slots=2)
    await worker.start()
    session, _ = await scripted.connect()
    (first, a), (second, b), (third, c) = (invocation("sleep", {"seconds": 3600}) for _ in range(3))
    session.send(first, second, third)  # one frame, one more than the slots
    failed = await session.wait_for(lambda m: m.WhichOneof("kind") == "failed")
    assert ref_of(failed) == c
    assert (failed.failed.error.type, failed.failed.error.retryable) == ("SlotsExhausted", True)
    assert session.about(c) == ["failed"]  # never started

    session.cancel(a)
    await session.wait_for(lambda m: m.WhichOneof("kind") == "cancel_acknowledged")
    d = session.invoke("echo", 1)
    await session.wait_for(lambda m: m.WhichOneof("kind") == "completed" and ref_of(m) == d)
    assert worker.executor.peak_in_flight == 2
    assert session.about(b) == ["started"]


async def test_reconnect_re_hellos_with_running_attempts_and_honours_adoption(
    scripted: ScriptedServer, make_worker: MakeWorker
) -> None:
    worker = make_worker()
    await worker.start()
    first, first_hello = await scripted.connect()
    kept = first.invoke("sleep", {"seconds": 3600})
    fenced = first.invoke("sleep", {"seconds": 3600})
    await first.wait_for(lambda m: ref_of(m) == fenced and m.WhichOneof("kind") == "started")
    first.close()  # the server ends the stream; the handlers keep running

    second, hello = await scripted.connect(adopted=[kept], rejected=[fenced], heartbeat_interval_s=0.05)
    assert hello.instance_id == first_hello.instance_id
    assert running_of(wpb.WorkerMessage(hello=hello)) == {kept, fenced}
    # The rejected attempt is aborted and never mentioned again; the adopted one runs on.
    heartbeat = await second.wait_for(lambda m: m.WhichOneof("kind") == "heartbeat" and running_of(m) == {kept})
    assert heartbeat is not None
    assert worker.executor.running() == [AttemptKey(*kept)]
    second.cancel(kept)
    await second.wait_for(lambda m: m.WhichOneof("kind") == "cancel_acknowledged" and ref_of(m) == kept)
    assert second.about(fenced) == []


@pytest.mark.parametrize("adopt", [True, False], ids=["adopted", "rejected"])
async def test_reports_made_while_disconnected_follow_the_welcome(
    scripted: ScriptedServer, make_worker: MakeWorker, adopt: bool
) -> None:
    worker = make_worker()
    await worker.start()
    first, _ = await scripted.connect()
    ref = first.invoke("sleep", {"seconds": 0.3})
    await first.next("started")
    first.close()

    second = await scripted.next_session()
    hello = (await second.next("hello")).hello
    assert ref in running_of(wpb.WorkerMessage(hello=hello))
    assert await worker.wait_idle(timeout_s=10)  # it finished while there was no session to tell
    second.welcome(adopted=[ref] if adopt else [], rejected=[] if adopt else [ref], heartbeat_interval_s=0.05)
    if adopt:
        completed = await second.next("completed", skip=("heartbeat", "progress"))
        assert ref_of(completed) == ref
        # Progress made while disconnected is delivered too, before the terminal report.
        assert set(second.about(ref)) == {"progress", "completed"}
    else:
        barrier = second.invoke("echo", "barrier")
        await second.wait_for(lambda m: m.WhichOneof("kind") == "completed" and ref_of(m) == barrier)
        assert second.about(ref) == []


async def test_a_server_that_is_unreachable_is_retried(scripted: ScriptedServer, make_worker: MakeWorker) -> None:
    retried = asyncio.Event()

    class RetrySpy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retrying" in record.getMessage():
                retried.set()

    spy = RetrySpy()
    logging.getLogger("taskwire.worker").addHandler(spy)
    port = _free_port()
    worker = make_worker(server=f"127.0.0.1:{port}")
    try:
        await worker.start()
        await asyncio.wait_for(retried.wait(), 10)  # nobody listens there yet
        # (A server bound but not started would accept the TCP connection and leave the hello unanswered.)
        restarted = ScriptedServer(port=port)
        await restarted.start()
        try:
            await restarted.connect(timeout_s=10, session_id="at-last")
            assert (await worker.wait_connected(timeout_s=10)).session_id == "at-last"
        finally:
            await worker.close()
            await restarted.stop()
    finally:
        logging.getLogger("taskwire.worker").removeHandler(spy)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_giving_up_after_max_reconnect_attempts(make_worker: MakeWorker) -> None:
    worker = make_worker(server=f"127.0.0.1:{_free_port()}", max_reconnect_attempts=2)
    await worker.start()
    with pytest.raises(ConnectionLostError, match="gave up"):
        await asyncio.wait_for(worker.wait_closed(), 10)


async def test_a_server_drain_finishes_or_aborts_then_closes(scripted: ScriptedServer, make_worker: MakeWorker) -> None:
    worker = make_worker()
    await worker.start()
    session, _ = await scripted.connect(heartbeat_interval_s=0.05)
    quick = session.invoke("sleep", {"seconds": 0.1})
    slow = session.invoke("sleep", {"seconds": 3600})
    await session.wait_for(lambda m: m.WhichOneof("kind") == "started" and ref_of(m) == slow)
    session.drain(grace_s=0.5, reason="maintenance")
    draining = await session.wait_for(lambda m: m.WhichOneof("kind") == "draining")
    assert draining.draining.reason == "maintenance"
    late = session.invoke("echo", "too late")
    await session.wait_worker_done()
    await asyncio.wait_for(worker.wait_closed(), 10)
    assert session.about(quick)[-1] == "completed"
    assert session.about(slow)[-1] == "failed"
    failed = next(m.failed for m in session.received if ref_of(m) == slow and m.WhichOneof("kind") == "failed")
    assert (failed.error.type, failed.error.retryable) == ("WorkerShutdown", True)
    assert session.about(late) == ["failed"]  # WorkerDraining
    kinds = [m.WhichOneof("kind") for m in session.received]
    # Heartbeats kept flowing while it drained.
    assert "heartbeat" in kinds[kinds.index("draining") :]


async def test_close_aborts_running_attempts_and_reports_them(
    scripted: ScriptedServer, make_worker: MakeWorker
) -> None:
    worker = make_worker()
    await worker.start()
    session, _ = await scripted.connect()
    ref = session.invoke("sync_sleep", {"seconds": 3600})
    await session.next("started")
    await worker.close()
    await worker.close()  # idempotent
    assert session.about(ref) == ["started", "failed"]
    assert [m.WhichOneof("kind") for m in session.received if m.WhichOneof("kind") != "heartbeat"][-2:] == [
        "draining",
        "failed",
    ]
    await session.wait_worker_done()


async def test_a_graceful_drain_lets_running_attempts_finish(scripted: ScriptedServer, make_worker: MakeWorker) -> None:
    worker = make_worker()
    async with worker:
        session, _ = await scripted.connect(heartbeat_interval_s=0.05)
        ref = session.invoke("sleep", {"seconds": 0.3})
        await session.next("started")
        await worker.shutdown(grace_s=30)
    assert session.about(ref)[-1] == "completed"
    await session.wait_worker_done()
