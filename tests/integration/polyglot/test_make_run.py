"""`make run`'s command as the README describes it: a server with a local worker, its hints followed with the CLI.

`make run` is `taskwire-server --with-local-worker`; here it listens on an ephemeral port with its own
database, and the CLI gets `--server` (with `make run` the default address is already right).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil

from tests.harness import BIN, READY, Process, ServerProcess, spawn, wait_for

CLI = BIN / "taskwire"


def local_worker(server: Process) -> psutil.Process:
    """The `taskwire-worker` process the server started beside itself."""

    def find() -> psutil.Process | None:
        for child in psutil.Process(server.popen.pid).children(recursive=True):
            try:
                if any(part.endswith("taskwire-worker") for part in child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    return wait_for(find, what="the local worker process")


def taskwire(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(CLI), "--server", address, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def get_json(address: str, execution_id: str) -> dict[str, Any]:
    result = taskwire(address, "get", execution_id, "--json")
    assert result.returncode == 0, result.stderr
    view: dict[str, Any] = json.loads(result.stdout)
    return view


def in_state(address: str, execution_id: str, state: str) -> dict[str, Any]:
    def view_in_state() -> dict[str, Any] | None:
        view = get_json(address, execution_id)
        return view if view["state"] == state else None

    return wait_for(view_in_state, what=f"execution {execution_id} to be {state}")


def test_server_with_local_worker_follows_its_hints_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process = spawn(
        [str(BIN / "taskwire-server"), "--listen", "127.0.0.1:0", "--db", str(tmp_path / "db"), "--with-local-worker"]
    )
    worker: psutil.Process | None = None
    try:
        address = process.wait_for_line(READY).group(1)
        process.wait_for_line(re.escape("A local worker serves the demo handlers: echo, sleep, fail, progress."))
        # The hints name the server's address, since port 0 is not the CLI's default.
        hint_server = re.escape(f" --server {address}")
        submit_hint = process.wait_for_line(rf"^\s+taskwire{hint_server} submit sleep --input '(\{{.*\}})'")
        process.wait_for_line(rf"^\s+taskwire{hint_server} cancel <execution id>")
        process.wait_for_line(re.escape("Ctrl-C stops the server and the worker."))
        ServerProcess(process=process, address=address, db_path=tmp_path / "db").wait_for_workers(1)
        worker = local_worker(process)

        # The hint's command, without --watch (which would follow the execution until it ends).
        assert json.loads(submit_hint.group(1)) == {"seconds": 30}
        submitted = taskwire(address, "submit", "sleep", "--input", submit_hint.group(1))
        assert submitted.returncode == 0, submitted.stderr
        execution_id = submitted.stdout.strip()
        assert re.fullmatch(r"\S+", execution_id), submitted.stdout
        in_state(address, execution_id, "RUNNING")

        cancelled = taskwire(address, "cancel", execution_id)
        assert cancelled.returncode == 0, cancelled.stderr
        final = in_state(address, execution_id, "CANCELLED")
        assert final["reason"]["code"] == "CANCEL_REQUESTED"
        [attempt] = final["task_runs"][0]["attempts"]
        assert attempt["worker_id"] == "local"
        assert attempt["outcome"] == "CANCELLED"

        process.signal(signal.SIGINT)
        assert process.wait(timeout_s=30) == 0, process.output
        assert "taskwire-server stopped" in process.output
        # The server waited for its worker: it is gone, not orphaned.
        assert not worker.is_running(), f"the local worker (pid {worker.pid}) outlived the server"
    finally:
        process.kill()
        if worker is not None and worker.is_running():
            worker.kill()
