"""Start real taskwire processes for tests: a server on an ephemeral loopback port, worker agents.

Everything waits on conditions (a readiness line, a process exit, an RPC
answer), never on fixed sleeps.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
import psutil
import pytest

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc

BIN = Path(sys.executable).parent
READY = re.compile(r"taskwire-server listening on (\S+)")
T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], *, timeout_s: float = 20.0, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; the poll interval grows from 10 ms to 200 ms.

    Used only where no event exists to wait on (a state inside another process).
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def process_gone(process_id: int) -> bool:
    """Whether a process has exited: reaped, or a zombie its parent has yet to reap."""
    try:
        return Path(f"/proc/{process_id}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return True


def handler_processes(parent: int) -> set[int]:
    """The live children of `parent` that multiprocessing spawned: a worker's handler processes."""
    try:
        children = psutil.Process(parent).children()
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.Error:
            continue  # gone meanwhile, or unreadable
    return found


def free_port() -> int:
    """A loopback port free right now, for a process that must be told its port before it binds it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A child process whose output is collected in the background."""

    args: list[str]
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _seen: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        with self.popen.stdout:  # closed at EOF: an unclosed pipe is a ResourceWarning, and warnings are errors
            for line in self.popen.stdout:
                with self._seen:
                    self.lines.append(line.rstrip("\n"))
                    self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    @property
    def output(self) -> str:
        with self._seen:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str | re.Pattern[str], *, timeout_s: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout_s
        index = 0
        with self._seen:
            while True:
                for line in self.lines[index:]:
                    match = regex.search(line)
                    if match:
                        return match
                index = len(self.lines)
                remaining = deadline - time.monotonic()
                if self.popen.poll() is not None and index == len(self.lines):
                    raise RuntimeError(
                        f"{self.args[0]} exited ({self.popen.returncode}) before {regex.pattern!r}:\n{self.output}"
                    )
                if remaining <= 0:
                    raise TimeoutError(f"no line matching {regex.pattern!r} within {timeout_s}s:\n{self.output}")
                self._seen.wait(min(remaining, 0.5))

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def wait(self, timeout_s: float = 20.0) -> int:
        return self.popen.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=20)


def spawn(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    max_file_bytes: int | None = None,
) -> Process:
    """Start a child; `max_file_bytes` caps the size of any file it (or its children) writes, as a full disk
    would: writes past it fail with EFBIG (Python ignores SIGXFSZ)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}

    def limit() -> None:
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    popen = subprocess.Popen(
        list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=full_env,
        cwd=cwd,
        preexec_fn=limit if max_file_bytes is not None else None,
    )
    return Process(args=list(args), popen=popen)


@dataclass
class ServerProcess:
    process: Process
    address: str
    db_path: Path

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def stats(self) -> tpb.GetStatsResponse:
        with self.channel() as channel:
            response: tpb.GetStatsResponse = task_service_pb2_grpc.TaskServiceStub(channel).GetStats(
                tpb.GetStatsRequest(), timeout=5
            )
            return response

    def wait_for_workers(self, count: int, *, timeout_s: float = 20.0) -> None:
        wait_for(
            lambda: self.stats().connected_workers >= count,
            timeout_s=timeout_s,
            what=f"{count} connected worker(s)",
        )


def start_server(
    db_path: Path,
    *extra_args: str,
    env: dict[str, str] | None = None,
    bin_dir: Path = BIN,
    cwd: Path | None = None,
    max_file_bytes: int | None = None,
    store: str = "",
) -> ServerProcess:
    """A real `taskwire-server` on 127.0.0.1 with an ephemeral port and a real SQLite file (or the `store` URL).

    `bin_dir` chooses the installation whose executable runs (default: the one running the tests).
    """
    target = ["--store", store] if store else ["--db", str(db_path)]
    process = spawn(
        [str(bin_dir / "taskwire-server"), "--listen", "127.0.0.1:0", *target, *extra_args],
        env=env,
        cwd=cwd,
        max_file_bytes=max_file_bytes,
    )
    try:
        address = process.wait_for_line(READY).group(1)
    except BaseException:
        process.kill()
        raise
    return ServerProcess(process=process, address=address, db_path=db_path)


def spawn_worker(
    address: str,
    *extra_args: str,
    handlers: str = "taskwire.worker.demo",
    slots: int = 4,
    name: str | None = None,
    env: dict[str, str] | None = None,
    bin_dir: Path = BIN,
    cwd: Path | None = None,
) -> Process:
    """A real `taskwire-worker` process started towards `address`, without waiting for it to connect
    (many can start at once; wait for each one's "connected" line)."""
    args = [str(bin_dir / "taskwire-worker"), "--server", address, "--handlers", handlers, "--slots", str(slots)]
    if name:
        args += ["--name", name]
    return spawn([*args, *extra_args], env=env, cwd=cwd)


def start_worker(
    address: str,
    *extra_args: str,
    handlers: str = "taskwire.worker.demo",
    slots: int = 4,
    name: str | None = None,
    env: dict[str, str] | None = None,
    bin_dir: Path = BIN,
    cwd: Path | None = None,
) -> Process:
    """A real `taskwire-worker` process connected to `address`; returns once it says it is connected."""
    process = spawn_worker(
        address, *extra_args, handlers=handlers, slots=slots, name=name, env=env, bin_dir=bin_dir, cwd=cwd
    )
    try:
        process.wait_for_line("connected")
    except BaseException:
        process.kill()
        raise
    return process


@dataclass
class Cluster:
    """Processes started by a test, torn down in reverse order at the end."""

    tmp_path: Path
    processes: list[Process] = field(default_factory=list)
    # The store URL of a database name (PostgreSQL); None: each name is a SQLite file in tmp_path.
    store_url: Callable[[str], str] | None = None

    def server(
        self,
        *extra_args: str,
        db_name: str = "taskwire.db",
        env: dict[str, str] | None = None,
        bin_dir: Path = BIN,
        cwd: Path | None = None,
        max_file_bytes: int | None = None,
    ) -> ServerProcess:
        server = start_server(
            self.tmp_path / db_name,
            *extra_args,
            env=env,
            bin_dir=bin_dir,
            cwd=cwd,
            max_file_bytes=max_file_bytes,
            store=self.store_url(db_name) if self.store_url is not None else "",
        )
        self.processes.append(server.process)
        return server

    def standby(self, *extra_args: str, port: int, db_name: str = "taskwire.db") -> ServerProcess:
        """A `--standby` server on the PostgreSQL database of `db_name`, to listen on 127.0.0.1:`port` once it has
        taken over; returned as soon as it says it waits (it binds no port before)."""
        assert self.store_url is not None, "a standby needs a PostgreSQL store (the procs fixture's postgresql)"
        store = self.store_url(db_name)
        args = ["--listen", f"127.0.0.1:{port}", "--store", store, "--standby", *extra_args]
        process = spawn([str(BIN / "taskwire-server"), *args])
        self.processes.append(process)
        process.wait_for_line("standby: the database")
        return ServerProcess(process=process, address=f"127.0.0.1:{port}", db_path=self.tmp_path / db_name)

    def server_at(self, address: str, *extra_args: str, **kwargs: object) -> ServerProcess:
        """A server on the loopback port of `address`, with the default database: a restart of the one there."""
        port = address.rsplit(":", 1)[1]
        return self.server("--listen", f"127.0.0.1:{port}", *extra_args, **kwargs)  # type: ignore[arg-type]

    def worker(self, server: ServerProcess | str, *extra_args: str, **kwargs: object) -> Process:
        """A worker of `server`, or of the addresses given (`a:1,b:2`: an active server and its standby)."""
        address = server if isinstance(server, str) else server.address
        worker = start_worker(address, *extra_args, **kwargs)  # type: ignore[arg-type]
        self.processes.append(worker)
        return worker

    def close(self) -> None:
        for process in reversed(self.processes):
            process.kill()

    def tails(self, lines: int = 40) -> str:
        """The last lines of each process's output: what a failed test shows of the processes it ran."""
        return "\n\n".join(
            f"$ {shlex.join(process.args)}  (exit status {process.popen.poll()})\n" + "\n".join(process.lines[-lines:])
            for process in self.processes
        )


C = TypeVar("C", bound="Closeable")


class Closeable(Protocol):
    def close(self) -> None: ...


def opened(make: Callable[[ServerProcess], C]) -> Iterator[Callable[[ServerProcess], C]]:
    """For a fixture: `make(server)` opens a client, and every client opened is closed at teardown."""
    clients: list[C] = []

    def open_client(server: ServerProcess) -> C:
        client = make(server)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


# A test (or module) marked with this runs once on SQLite and once on PostgreSQL: the servers of its `procs`
# fixture (tests/integration/conftest.py) use that store.
BOTH_STORES = pytest.mark.parametrize("procs", ["sqlite", "postgresql"], indirect=True)


# A test (or module) marked with this runs on PostgreSQL only (standbys, leases: what only that store has).
POSTGRESQL_ONLY = pytest.mark.parametrize("procs", ["postgresql"], indirect=True)


# A test (or module) marked with this runs on SQLite only, also under TASKWIRE_TEST_STORE=postgresql: it is
# about SQLite's file, its writer process or its file lock.
SQLITE_ONLY = pytest.mark.parametrize("procs", ["sqlite"], indirect=True)


def cluster(tmp_path: Path, store_url: Callable[[str], str] | None = None) -> Iterator[Cluster]:
    running = Cluster(tmp_path, store_url=store_url)
    try:
        yield running
    finally:
        running.close()
