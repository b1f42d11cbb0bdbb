"""The engine under test: started on the in-memory store with a manual clock, closed after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskwire.server.store import MemoryStore
from tests.unit.engine.support import Rig, started


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with started(MemoryStore()) as engine_rig:
        yield engine_rig
