"""The real ``taskwire-worker`` console script against a scripted server: signals and exit codes."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import pytest

from taskwire.conformance._scripted import ScriptedServer, ScriptedSession, ref_of
from taskwire.v1 import worker_service_pb2 as wpb
from tests.harness import handler_processes, process_gone, wait_for

WORKER = str(Path(sys.executable).parent / "taskwire-worker")


class WorkerProcess:
    """A ``taskwire-worker`` child whose stderr is collected line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._new_line = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._new_line.set()
        self._new_line.set()

    async def wait_for_line(self, text: str, timeout_s: float = 30.0) -> str:
        async with asyncio.timeout(timeout_s):
            while True:
                self._new_line.clear()
                for line in self.lines:
                    if text in line:
                        return line
                if self.process.returncode is not None and self._reader.done():
                    raise AssertionError(f"worker exited before logging {text!r}:\n" + "\n".join(self.lines))
                await self._new_line.wait()

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def exit_code(self, timeout_s: float = 30.0) -> int:
        async with asyncio.timeout(timeout_s):
            code = await self.process.wait()
            await self._reader
        return code

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()


class SpawnWorker(Protocol):
    async def __call__(self, *extra: str) -> WorkerProcess: ...


@pytest.fixture
async def spawn_worker(scripted: ScriptedServer) -> AsyncIterator[SpawnWorker]:
    spawned: list[WorkerProcess] = []

    async def spawn(*extra: str) -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            WORKER,
            "--server",
            scripted.address,
            "--handlers",
            "taskwire.worker.demo",
            "--name",
            "subprocess-worker",
            *extra,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        worker = WorkerProcess(process)
        spawned.append(worker)
        return worker

    yield spawn
    for worker in spawned:
        await worker.kill()


async def _connected(scripted: ScriptedServer, worker: WorkerProcess) -> tuple[ScriptedSession, wpb.WorkerHello]:
    session, hello = await scripted.connect(timeout_s=30, session_id="process-session", heartbeat_interval_s=0.05)
    await worker.wait_for_line("connected")
    return session, hello


async def test_sigterm_drains_in_flight_work_then_exits_0(scripted: ScriptedServer, spawn_worker: SpawnWorker) -> None:
    worker = await spawn_worker("--slots", "3", "--drain-timeout", "30")
    session, hello = await _connected(scripted, worker)
    assert (hello.name, hello.slots) == ("subprocess-worker", 3)
    assert "process-session" in await worker.wait_for_line("connected")

    ref = session.invoke("sleep", {"seconds": 0.5})
    await session.next("started")
    worker.send_signal(signal.SIGTERM)
    await session.wait_for(lambda m: m.WhichOneof("kind") == "draining")
    completed = await session.wait_for(lambda m: m.WhichOneof("kind") in ("completed", "failed"))
    assert ref_of(completed) == ref
    assert completed.WhichOneof("kind") == "completed"
    await session.wait_worker_done()
    assert await worker.exit_code() == 0
    kinds = [m.WhichOneof("kind") for m in session.received]
    between = kinds[kinds.index("draining") : kinds.index("completed")]
    assert "heartbeat" in between  # the lease stayed alive while it drained


async def test_a_second_sigterm_aborts_and_reports_worker_shutdown(
    scripted: ScriptedServer, spawn_worker: SpawnWorker
) -> None:
    worker = await spawn_worker("--drain-timeout", "60")
    session, _ = await _connected(scripted, worker)
    ref = session.invoke("sleep", {"seconds": 3600})
    await session.next("started")
    worker.send_signal(signal.SIGTERM)
    await session.wait_for(lambda m: m.WhichOneof("kind") == "draining")
    worker.send_signal(signal.SIGTERM)
    failed = await session.wait_for(lambda m: m.WhichOneof("kind") == "failed")
    assert ref_of(failed) == ref
    assert (failed.failed.error.type, failed.failed.error.retryable) == ("WorkerShutdown", True)
    assert await worker.exit_code() == 0


async def test_sigint_aborts_at_once(scripted: ScriptedServer, spawn_worker: SpawnWorker) -> None:
    worker = await spawn_worker("--drain-timeout", "60")
    session, _ = await _connected(scripted, worker)
    ref = session.invoke("sync_sleep", {"seconds": 3600})
    await session.next("started")
    worker.send_signal(signal.SIGINT)
    failed = await session.wait_for(lambda m: m.WhichOneof("kind") == "failed")
    assert ref_of(failed) == ref
    assert failed.failed.error.type == "WorkerShutdown"
    assert await worker.exit_code() == 0


async def test_process_isolation_terminates_a_handler_that_ignores_cancel(
    scripted: ScriptedServer, spawn_worker: SpawnWorker
) -> None:
    worker = await spawn_worker("--isolation", "process", "--stop-grace", "0.2")
    session, _ = await _connected(scripted, worker)
    ref = session.invoke("spin", {"seconds": 3600})
    await session.next("started", timeout_s=30)
    session.cancel(ref)
    ack = await session.wait_for(lambda m: m.WhichOneof("kind") == "cancel_acknowledged", timeout_s=10)
    assert ref_of(ack) == ref
    worker.send_signal(signal.SIGTERM)
    assert await worker.exit_code() == 0


async def test_process_isolation_keeps_one_child_which_exits_when_the_worker_is_killed(
    scripted: ScriptedServer, spawn_worker: SpawnWorker
) -> None:
    worker = await spawn_worker("--isolation", "process", "--slots", "2")
    session, _ = await _connected(scripted, worker)
    children: list[set[int]] = []
    for n in range(3):  # one after another
        ref = session.invoke("echo", {"n": n})
        completed = await session.wait_for(lambda m: m.WhichOneof("kind") == "completed", timeout_s=30)
        assert ref_of(completed) == ref
        assert json.loads(completed.completed.output.data) == {"n": n}
        children.append(handler_processes(worker.process.pid))
    assert len(children[0]) == 1
    assert children[0] == children[1] == children[2]
    await worker.kill()  # SIGKILL: nothing of the worker's own runs after it
    wait_for(lambda: all(map(process_gone, children[0])), timeout_s=30, what="the handler process to exit")
