"""Real processes for the scenarios: a taskwire server with its workers (through ``tests/harness.py``),
other modules run as processes, and their CPU time and memory.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from tests.harness import Cluster, Process, ServerProcess, spawn, spawn_worker

if TYPE_CHECKING:
    from bench._common import Bench

REPO = Path(__file__).resolve().parent.parent
HANDLER_MODULES = "taskwire.worker.demo,bench.handlers"
# Worker processes import bench.handlers: the repository root must be on their path.
CHILD_ENV = {"PYTHONPATH": str(REPO)}


@dataclass
class Running:
    """A real taskwire-server and its taskwire-worker processes."""

    cluster: Cluster
    server: ServerProcess
    workers: list[Process]

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def server_pid(self) -> int:
        return self.server.process.popen.pid

    @property
    def server_pids(self) -> list[int]:
        """The server and its store writer process: their CPU is the server's."""
        return [process.pid for process in process_tree(self.server_pid)]

    @property
    def worker_pids(self) -> list[int]:
        return [worker.popen.pid for worker in self.workers]

    def add_worker(self, *args: str, slots: int) -> Process:
        """Start one more taskwire-worker (with `args` besides the usual); returns once it is connected."""
        worker = self.cluster.worker(
            self.server,
            *args,
            handlers=HANDLER_MODULES,
            slots=slots,
            name=f"bench-worker-{len(self.workers)}",
            env=CHILD_ENV,
        )
        self.workers.append(worker)
        return worker

    def add_workers(self, count: int, *, slots: int, timeout_s: float = 120.0) -> list[Process]:
        """Start `count` more taskwire-workers at once; returns once every one is connected."""
        started = []
        for _ in range(count):
            worker = spawn_worker(
                self.address,
                handlers=HANDLER_MODULES,
                slots=slots,
                name=f"bench-worker-{len(self.workers)}",
                env=CHILD_ENV,
            )
            self.cluster.processes.append(worker)  # torn down with the cluster, whatever happens next
            self.workers.append(worker)
            started.append(worker)
        for worker in started:
            worker.wait_for_line("connected", timeout_s=timeout_s)
        return started


@contextlib.contextmanager
def taskwire(
    bench: Bench,
    *,
    workers: int = 0,
    slots: int = 50,
    server_args: Sequence[str] = (),
    db_path: Path | None = None,
    graceful: bool = False,
    store_url: str = "",
    worker_args: Sequence[str] = (),
) -> Iterator[Running]:
    """A server on 127.0.0.1:<free port> with a fresh SQLite file (durable settings as shipped), or the
    store at `store_url`, and `workers` taskwire-worker processes serving the demo and bench handlers with
    `slots` slots each, started with `worker_args` besides.

    Everything is killed at the end; with `graceful` the server gets SIGTERM first, so its store is
    closed cleanly for a later restart.
    """
    directory = db_path.parent if db_path is not None else bench.scratch("taskwire")
    cluster = Cluster(directory, store_url=(lambda _name: store_url) if store_url else None)
    try:
        server = cluster.server(*server_args, db_name=db_path.name if db_path is not None else "taskwire.db")
        running = Running(cluster, server, [])
        for _ in range(workers):
            running.add_worker(*worker_args, slots=slots)
        if workers:
            server.wait_for_workers(workers)
        yield running
        if graceful:
            for worker in running.workers:
                worker.kill()
            server.process.stop(timeout_s=60)
    finally:
        cluster.close()


def spawn_module(module: str, *args: str, env: Mapping[str, str] | None = None) -> Process:
    """`python -m <module> args...` from the repository root, output collected by the harness."""
    return spawn([sys.executable, "-m", module, *args], env={**CHILD_ENV, **(env or {})}, cwd=REPO)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and its descendants: the server together with its store writer process."""
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process and its descendants."""
    total = 0
    for process in process_tree(pid):
        with contextlib.suppress(psutil.Error):
            total += int(process.memory_info().rss)
    return total


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of processes (threads included)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


class RssSampler:
    """Samples the resident set size of a process and its descendants from a thread, every `interval_s`."""

    def __init__(self, pid: int, *, interval_s: float = 0.1) -> None:
        self._pid = pid
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.samples: list[tuple[float, int]] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.samples.append((time.monotonic(), rss_bytes(self._pid)))
            self._stop.wait(self._interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
