"""Fixtures every test folder may use: a real PostgreSQL, started on first use and stopped at the end."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.postgres import PostgresCluster

# The processes the tests start must take SIGINT as a person's Ctrl-C even when this run was started with it
# ignored (in the background of a script, whose shell ignores it for such children): an ignored signal is
# inherited across exec, a handled one is reset to its default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster per test process (see `tests.postgres`), started when a test first asks for it."""
    cluster = PostgresCluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> Iterator[str]:
    """The URL of a new, empty database of its own, dropped after the test."""
    url = postgres.new_database()
    yield url
    postgres.drop_database(url)
