"""Fixtures of the worker end-to-end tests: SDK clients that are closed at the end of the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from taskwire.client import Client
from tests.harness import ServerProcess, opened


@pytest.fixture
def connect() -> Iterator[Callable[[ServerProcess], Client]]:
    """`connect(server)` opens an SDK client of that server; every client is closed at teardown."""
    yield from opened(lambda server: Client(server.address))


@pytest.fixture
def client(server: ServerProcess, connect: Callable[[ServerProcess], Client]) -> Client:
    """An SDK client of the default `server` fixture (short leases: 2 s, heartbeats every 0.5 s)."""
    return connect(server)
