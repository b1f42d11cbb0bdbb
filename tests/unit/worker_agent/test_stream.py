"""A heartbeat's running list is exact as of the moment it is written: what runs, plus every attempt
whose report comes after it on the stream, and nothing whose report went before it."""

from __future__ import annotations

from typing import Any

from taskwire.v1 import worker_service_pb2 as wpb
from taskwire.worker._executor import AttemptKey
from taskwire.worker._limits import WireLimits
from taskwire.worker._outbox import Outbox
from taskwire.worker._stream import SessionStream

RUNNING = AttemptKey("run-a", 1)
BEFORE = AttemptKey("run-b", 1)
AFTER = AttemptKey("run-c", 1)
QUEUED = AttemptKey("run-d", 1)


class _Call:
    def __init__(self) -> None:
        self.frames: list[wpb.ConnectRequest] = []

    async def write(self, frame: wpb.ConnectRequest) -> None:
        self.frames.append(frame)


def _completed(key: AttemptKey) -> wpb.WorkerMessage:
    ref = wpb.AttemptRef(task_run_id=key.task_run_id, attempt=key.attempt)
    return wpb.WorkerMessage(completed=wpb.AttemptCompleted(ref=ref))


def _listed(message: wpb.WorkerMessage) -> set[AttemptKey]:
    return {AttemptKey(r.task_run_id, r.attempt) for r in message.heartbeat.running_attempts}


async def test_a_heartbeat_lists_what_runs_and_the_reports_behind_it() -> None:
    outbox = Outbox(max_batch=3)
    call: Any = _Call()
    stream = SessionStream(
        call=call,
        outbox=outbox,
        running=lambda: [RUNNING],
        limits=WireLimits,
        handle=lambda message: None,
        flush_timeout_s=1.0,
    )
    outbox.put(_completed(BEFORE), attempt=BEFORE)
    outbox.put(wpb.WorkerMessage(heartbeat=wpb.Heartbeat()), session_only=True)
    outbox.put(_completed(AFTER), attempt=AFTER)
    outbox.put(_completed(QUEUED), attempt=QUEUED)  # beyond the batch: still waiting for the writer

    batch = await outbox.take()
    stream._stamp_heartbeats(batch)

    heartbeat = batch[1].message
    assert _listed(heartbeat) == {RUNNING, AFTER, QUEUED}


async def test_frames_stay_under_the_byte_budget() -> None:
    outbox = Outbox()
    for index in range(5):
        outbox.put(wpb.WorkerMessage(log=wpb.AttemptLog(text="x" * 1000)), attempt=AttemptKey(f"run-{index}", 1))
    batch = await outbox.take(max_bytes=2500)
    assert len(batch) == 2
    assert len(await outbox.take(max_bytes=10)) == 1  # at least one, always
