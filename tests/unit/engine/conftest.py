"""The engine under test: started on the in-memory store with a manual clock, closed after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskwire.server.engine import ManualClock
from taskwire.server.store import MemoryStore
from tests.unit.engine.support import CONFIG, Rig


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store = MemoryStore()
    await store.open()
    started = await Rig(store, ManualClock(), CONFIG).start()
    try:
        yield started
    finally:
        await started.close()
        await store.close()
