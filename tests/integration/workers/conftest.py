"""Fixtures of the worker end-to-end tests: SDK clients that are closed at the end of the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from taskwire.client import Client
from tests.harness import ServerProcess


@pytest.fixture
def connect() -> Iterator[Callable[[ServerProcess], Client]]:
    """`connect(server)` opens an SDK client of that server; every client is closed at teardown."""
    opened: list[Client] = []

    def open_client(server: ServerProcess) -> Client:
        client = Client(server.address)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


@pytest.fixture
def client(server: ServerProcess, connect: Callable[[ServerProcess], Client]) -> Client:
    """An SDK client of the default `server` fixture (short leases: 2 s, heartbeats every 0.5 s)."""
    return connect(server)
