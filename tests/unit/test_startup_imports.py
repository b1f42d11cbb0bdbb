"""What each process loads to start, so that starting one stays cheap (nothing is timed here).

A SQLite server, its writer process, the worker and the CLI load no library that only an option they were
not given needs: asyncpg (a PostgreSQL store), aiohttp and prometheus_client (metrics), cryptography (TLS
files), PyYAML (flow files). Each is checked in a fresh interpreter; the controls show that the check sees
such a library when the option is given (metrics, a PostgreSQL store, a flow file). The packages whose names
load on first use list each name once in their table, and each one loads.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

HEAVY = ("asyncpg", "aiohttp", "prometheus_client", "cryptography", "yaml")

# Starts an in-process server on SQLite with the given options, and stops it once it serves.
SERVE = """
import asyncio, pathlib, sys
import taskwire.server._main
from taskwire.server import ServerConfig, TaskwireServer

async def serve() -> None:
    config = ServerConfig(listen="127.0.0.1:0", db_path=pathlib.Path(sys.argv[1]) / "t.db", {options})
    async with TaskwireServer(config):
        pass

asyncio.run(serve())
"""


def loaded(code: str, *args: str) -> set[str]:
    """The modules a fresh interpreter (-P, as the processes run) holds after running `code`."""
    report = "\nimport json as _json, sys as _sys\nprint(_json.dumps(sorted(_sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-P", "-c", code + report, *args], capture_output=True, text=True, timeout=50, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted({name.split(".")[0] for name in modules} & set(HEAVY))


def test_the_writer_process_loads_only_the_sqlite_store() -> None:
    modules = loaded("import taskwire.server.store._sqlite_writer")
    assert heavy(modules) == []
    assert not {"grpc", "taskwire.server.engine"} & modules
    others = {"_group_commit", "_memory", "_postgres", "_postgres_lease", "_url"}
    assert {f"taskwire.server.store.{name}" for name in others} & modules == set()


def test_a_sqlite_server_starts_without_the_optional_libraries(tmp_path: Path) -> None:
    modules = loaded(SERVE.format(options=""), str(tmp_path))
    assert "taskwire.server.engine" in modules  # it did start
    assert heavy(modules) == []


def test_metrics_and_postgresql_load_their_libraries(tmp_path: Path) -> None:
    """The controls: the option that needs a library loads it (and the check above would see it)."""
    metrics = loaded(SERVE.format(options='metrics_listen="127.0.0.1:0"'), str(tmp_path))
    assert heavy(metrics) == ["aiohttp", "prometheus_client"]
    postgres = loaded("from taskwire.server.store import store_from_url\nstore_from_url('postgresql://tw@db/tw')")
    assert heavy(postgres) == ["asyncpg"]


def test_the_worker_loads_no_metrics_library() -> None:
    modules = loaded("import taskwire.worker._main")
    assert heavy(modules) == []
    assert not any(name.startswith("taskwire.server") for name in modules)


def test_the_cli_loads_what_few_commands_need_when_they_run() -> None:
    modules = loaded("import taskwire.client._cli")
    assert heavy(modules) == []
    assert not {"taskwire.client._flowfile", "taskwire.client._live", "taskwire.console"} & modules
    flow = loaded("from taskwire.client._flowfile import load_flow\nload_flow('tasks: [{handler: echo}]', 'f.yaml')")
    assert heavy(flow) == ["yaml"]


@pytest.mark.parametrize("package", ["taskwire.server", "taskwire.server.store"])
def test_every_public_name_of_a_lazy_package_is_in_its_table_and_loads(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(module._WHERE)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
