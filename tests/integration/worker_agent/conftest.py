"""Fixtures: a scripted WorkerService on an ephemeral port, and real workers connected to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from taskwire.conformance._scripted import ScriptedServer
from taskwire.worker import Worker, load_handlers

MakeWorker = Callable[..., Worker]


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_worker(scripted: ScriptedServer) -> AsyncIterator[MakeWorker]:
    """Build in-process workers for the scripted server (fast reconnects, short graces); closed at the end."""
    workers: list[Worker] = []

    def make(**overrides: Any) -> Worker:
        settings: dict[str, Any] = {
            "server": scripted.address,
            "registry": load_handlers(["taskwire.worker.demo"]),
            "slots": 2,
            "name": "test-worker",
            "reconnect_initial_s": 0.02,
            "reconnect_max_s": 0.2,
            "stop_grace_s": 0.5,
            "flush_timeout_s": 3.0,
            **overrides,
        }
        worker = Worker(**settings)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        await worker.close()
