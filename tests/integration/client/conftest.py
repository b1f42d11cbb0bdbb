"""Fixtures for the SDK and CLI tests: one real server with a real worker per module, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.harness import BIN, Cluster, ServerProcess

# Short leases so a lost worker is noticed quickly; the same settings as the shared `server` fixture.
SERVER_ARGS = ("--lease-timeout", "2", "--heartbeat-interval", "0.5", "--cancel-grace", "2")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with one demo worker (8 slots), shared by the tests of a module; killed at the end."""
    running = Cluster(tmp_path_factory.mktemp("client"))
    try:
        server = running.server(*SERVER_ARGS)
        running.worker(server, slots=8)
        server.wait_for_workers(1)
        yield server
    finally:
        running.close()


@dataclass(frozen=True)
class Cli:
    """Runs the real `taskwire` binary against one server; every run is checked for tracebacks."""

    address: str

    def command(self, *args: str) -> list[str]:
        return [str(BIN / "taskwire"), *args]

    def env(self) -> dict[str, str]:
        return {**os.environ, "TASKWIRE_SERVER": self.address, "PYTHONUNBUFFERED": "1"}

    def __call__(self, *args: str, stdin: str | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            env=self.env(),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result


@pytest.fixture
def cli(shared: ServerProcess) -> Cli:
    return Cli(shared.address)
