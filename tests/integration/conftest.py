"""Fixtures for tests that run real taskwire processes on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster, ServerProcess, cluster, opened
from tests.integration.server.support import Client
from tests.postgres import PostgresCluster


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report shows the last lines of every process it started through `procs`."""
    report = yield
    running = getattr(item, "funcargs", {}).get("procs")
    if report.when == "call" and report.failed and isinstance(running, Cluster):
        report.sections.append(("taskwire processes: their last lines", running.tails()))
    return report


@pytest.fixture
def procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Start servers and workers with `procs.server(...)` / `procs.worker(server, ...)`; all are killed at the end.

    Servers keep a SQLite file per database name, or with `BOTH_STORES` also a PostgreSQL database per name.
    With TASKWIRE_TEST_STORE=postgresql every test's servers use PostgreSQL (the tests that read SQLite's
    files then fail: they are about SQLite).
    """
    if getattr(request, "param", os.environ.get("TASKWIRE_TEST_STORE", "sqlite")) == "sqlite":
        yield from cluster(tmp_path)
        return
    postgres: PostgresCluster = request.getfixturevalue("postgres")
    databases: dict[str, str] = {}

    def store_url(db_name: str) -> str:
        if db_name not in databases:
            databases[db_name] = postgres.new_database()
        return databases[db_name]

    yield from cluster(tmp_path, store_url)
    for url in databases.values():
        postgres.drop_database(url)


@pytest.fixture
def server(procs: Cluster) -> ServerProcess:
    """A fresh server on 127.0.0.1:<ephemeral> with its own SQLite file, short leases for fast tests."""
    return procs.server("--lease-timeout", "2", "--heartbeat-interval", "0.5", "--cancel-grace", "2")


@pytest.fixture
def connect() -> Iterator[Callable[[ServerProcess], Client]]:
    """`connect(server)` opens a raw TaskService client of that server; every one is closed at teardown."""
    yield from opened(Client.of)


@pytest.fixture
def client(server: ServerProcess, connect: Callable[[ServerProcess], Client]) -> Client:
    """A raw TaskService client of the default `server` fixture."""
    return connect(server)
