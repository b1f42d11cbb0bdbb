"""Fixtures of the server integration tests: clients that are closed at the end of the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.harness import ServerProcess
from tests.integration.server.support import Client


@pytest.fixture
def connect() -> Iterator[Callable[[ServerProcess], Client]]:
    """`connect(server)` opens a client to that server; every client is closed at teardown."""
    opened: list[Client] = []

    def open_client(server: ServerProcess) -> Client:
        client = Client.of(server)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


@pytest.fixture
def client(server: ServerProcess, connect: Callable[[ServerProcess], Client]) -> Client:
    """A client of the default `server` fixture."""
    return connect(server)
