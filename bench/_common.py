"""What every scenario shares: sizes, real processes (through ``tests/harness.py``), gRPC clients,
statistics, tables and the JSON results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import psutil

from bench.handlers import monotonic_s
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from taskwire.v1 import types_pb2 as pb
from tests.harness import Cluster, Process, ServerProcess, spawn, spawn_worker, wait_for

if TYPE_CHECKING:
    from taskwire.v1.task_service_pb2_grpc import TaskServiceAsyncStub

__all__ = [
    "FULL",
    "QUICK",
    "REPO",
    "RESULTS_DIR",
    "Bench",
    "Metric",
    "RssSampler",
    "Running",
    "ScenarioResult",
    "Sizes",
    "active_count",
    "channel",
    "cpu_seconds",
    "describe_unsuccessful",
    "echo_execution",
    "fmt",
    "free_port",
    "monotonic_s",
    "pace",
    "percentile",
    "render_table",
    "rss_bytes",
    "spawn_module",
    "task_stub",
    "taskwire",
    "unsuccessful_count",
    "wait_drained",
    "wait_for",
]

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
HANDLER_MODULES = "taskwire.worker.demo,bench.handlers"
# Worker processes import bench.handlers: the repository root must be on their path.
CHILD_ENV = {"PYTHONPATH": str(REPO)}
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizes:
    """How much work each scenario does. FULL is what `make bench` runs; QUICK is a smoke test."""

    tasks_single: int  # scenario 1a: one SubmitExecution per task
    tasks_batched: int  # scenario 1b: SubmitExecutions in batches
    tasks_peer: int  # each peer (Celery, Dramatiq, procrastinate), each way
    submit_callers: int  # concurrent one-submit-per-task callers, and callers of the bare unary echo
    batch_size: int
    batches_in_flight: int
    workers: int  # taskwire-worker processes (and each peer's worker processes)
    worker_slots: int  # slots per taskwire-worker: the window of each worker stream
    baseline_s: float  # length of each bare gRPC measurement
    latency: tuple[tuple[int, float], ...]  # (submits per second, seconds) paced
    cancel_samples: int
    cancel_load_rate: int  # tasks/s of background load in the loaded cancel measurement
    backpressure_capacity: int
    backpressure_s: float
    backpressure_waiters: int
    pending: int  # scenarios 5 and 7: pending tasks in the store
    many_tasks: int
    many_streams: tuple[int, int]  # scenario 6: few and many worker streams, `many_total_slots` slots in all
    many_processes: tuple[int, int]  # scenario 6: few and many taskwire-worker processes, the same slots
    many_total_slots: int
    flow_tasks: int  # scenario 9: queued tasks drained per variant
    flow_slots: int


FULL = Sizes(
    # 20,000 batched as the issue asks; one-per-task and the peer run 10,000 each, at a few hundred
    # tasks/s on a busy 2-core machine, to keep `make bench` under 15 minutes. Rates, not totals,
    # are compared; `python -m bench --tasks 20000` runs all three at 20,000.
    tasks_single=10_000,
    tasks_batched=20_000,
    tasks_peer=10_000,
    submit_callers=64,
    batch_size=100,
    batches_in_flight=4,
    workers=2,
    worker_slots=50,
    baseline_s=3.0,
    latency=((100, 10.0), (1000, 4.0)),
    cancel_samples=30,
    cancel_load_rate=500,
    backpressure_capacity=1000,
    backpressure_s=8.0,
    backpressure_waiters=40,
    pending=100_000,
    many_tasks=10_000,
    many_streams=(4, 200),
    many_processes=(4, 50),
    many_total_slots=200,
    flow_tasks=20_000,
    flow_slots=50,
)

QUICK = Sizes(
    tasks_single=600,
    tasks_batched=600,
    tasks_peer=600,
    submit_callers=16,
    batch_size=100,
    batches_in_flight=4,
    workers=2,
    worker_slots=50,
    baseline_s=0.5,
    latency=((100, 1.0), (1000, 0.5)),
    cancel_samples=4,
    cancel_load_rate=200,
    backpressure_capacity=100,
    backpressure_s=1.0,
    backpressure_waiters=5,
    pending=3_000,
    many_tasks=600,
    many_streams=(4, 200),
    many_processes=(2, 4),
    many_total_slots=200,
    flow_tasks=1_000,
    flow_slots=50,
)


# --------------------------------------------------------------------------------------------- results


@dataclass(kw_only=True)
class Metric:
    """One figure of a scenario, with its value in each run."""

    key: str
    label: str
    unit: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return percentile(self.values, 50)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "runs": self.values,
        }


@dataclass(kw_only=True)
class ScenarioResult:
    name: str
    title: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # per-run extras kept in the JSON only
    skipped: str = ""

    def add(self, key: str, label: str, unit: str, value: float) -> None:
        metric = self.metrics.get(key)
        if metric is None:
            metric = self.metrics[key] = Metric(key=key, label=label, unit=unit)
        metric.values.append(value)

    def median(self, key: str) -> float | None:
        metric = self.metrics.get(key)
        return metric.median if metric is not None and metric.values else None

    def table(self) -> str:
        if self.skipped:
            return f"{self.title}\n  skipped: {self.skipped}"
        rows = [
            [m.label, fmt(m.median, m.unit), fmt(m.low, m.unit), fmt(m.high, m.unit), m.unit, str(len(m.values))]
            for m in self.metrics.values()
            if m.values
        ]
        text = render_table(["figure", "median", "min", "max", "unit", "runs"], rows, title=self.title)
        if self.notes:
            text += "\n" + "\n".join(f"  · {note}" for note in self.notes)
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "skipped": self.skipped,
            "params": self.params,
            "metrics": {key: metric.to_json() for key, metric in self.metrics.items() if metric.values},
            "notes": self.notes,
            "details": self.details,
        }


@dataclass(kw_only=True)
class Bench:
    """One invocation of the suite: its sizes, its run count, a scratch directory, shared artefacts."""

    sizes: Sizes
    runs: int
    quick: bool
    root: Path
    # Artefacts one scenario leaves for another (the memory scenario's stores for the recovery one).
    shared: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started_at:7.1f}s] {message}", file=sys.stderr, flush=True)

    def scratch(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=self.root))


def source_state() -> str:
    """The commit measured, and whether the server, worker or protos differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "server", "worker_agent", "client", "common", "protos"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit}{' with uncommitted changes to server/worker/protos' if changed else ''}"


def machine_info() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "source": source_state(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "load_average": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
    }


def write_results(directory: Path, payload: Mapping[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / time.strftime("bench-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating linearly between the two nearest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


# --------------------------------------------------------------------------------------------- tables


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit == "×":
        return f"{value:.2f}×"
    if unit in ("tasks/s", "calls/s", "msgs/s", "tasks"):
        return f"{value:,.0f}"
    if unit == "%":
        return f"{value:.1f}"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, title: str = "") -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
        ]
        return "  " + "  ".join(parts).rstrip()

    out = [title] if title else []
    out += [line(headers), "  " + "  ".join("-" * width for width in widths)]
    out += [line(row) for row in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- processes


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

    def add_worker(self, *, slots: int) -> Process:
        """Start one more taskwire-worker; returns once it is connected."""
        worker = self.cluster.worker(
            self.server, handlers=HANDLER_MODULES, slots=slots, name=f"bench-worker-{len(self.workers)}", env=CHILD_ENV
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
) -> Iterator[Running]:
    """A server on 127.0.0.1:<free port> with a fresh SQLite file (durable settings as shipped), or the
    store at `store_url`, and `workers` taskwire-worker processes serving the demo and bench handlers with
    `slots` slots each.

    Everything is killed at the end; with `graceful` the server gets SIGTERM first, so its store is
    closed cleanly for a later restart.
    """
    directory = db_path.parent if db_path is not None else bench.scratch("taskwire")
    cluster = Cluster(directory, store_url=(lambda _name: store_url) if store_url else None)
    try:
        server = cluster.server(*server_args, db_name=db_path.name if db_path is not None else "taskwire.db")
        running = Running(cluster, server, [])
        for _ in range(workers):
            running.add_worker(slots=slots)
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


# --------------------------------------------------------------------------------------------- clients


def channel(address: str, *options: tuple[str, Any]) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=[*CHANNEL_OPTIONS, *options])


def task_stub(chan: grpc.aio.Channel) -> TaskServiceAsyncStub:
    return task_service_pb2_grpc.TaskServiceStub(chan)


def echo_execution(
    handler: str = "echo", input_json: bytes = b"null", *, metadata: Mapping[str, str] | None = None
) -> tpb.ExecutionSpec:
    return tpb.ExecutionSpec(
        tasks=[tpb.TaskSpec(handler=handler, input=pb.Payload(data=input_json, content_type="application/json"))],
        metadata=dict(metadata or {}),
    )


_ACTIVE = (pb.EXECUTION_STATE_PENDING, pb.EXECUTION_STATE_RUNNING, pb.EXECUTION_STATE_WAITING)
_UNSUCCESSFUL = (pb.EXECUTION_STATE_FAILED, pb.EXECUTION_STATE_CANCELLED)


async def _any_in(stub: TaskServiceAsyncStub, states: Sequence[pb.ExecutionState.ValueType]) -> int:
    page = await stub.ListExecutions(tpb.ListExecutionsRequest(states=states, page_size=1), timeout=30)
    return len(page.executions)


async def active_count(stub: TaskServiceAsyncStub) -> int:
    """0 when the store holds no execution that is still PENDING, RUNNING or WAITING, else 1."""
    return await _any_in(stub, _ACTIVE)


async def unsuccessful_count(stub: TaskServiceAsyncStub) -> int:
    """0 when the store holds no FAILED or CANCELLED execution, else 1."""
    return await _any_in(stub, _UNSUCCESSFUL)


async def describe_unsuccessful(stub: TaskServiceAsyncStub, *, limit: int = 3) -> str:
    """What went wrong with the first few FAILED or CANCELLED executions, for an error message."""
    page = await stub.ListExecutions(tpb.ListExecutionsRequest(states=_UNSUCCESSFUL, page_size=limit), timeout=30)
    lines = []
    for execution in page.executions:
        for task_run in execution.task_runs:
            attempts = "; ".join(
                f"attempt {a.number} {pb.AttemptOutcome.Name(a.outcome)} {a.error.type}: {a.error.message}"
                for a in task_run.attempts
            )
            lines.append(
                f"{execution.id} {pb.ReasonCode.Name(task_run.reason_code)} {task_run.reason_message!r} [{attempts}]"
            )
    return "\n".join(lines)


async def wait_drained(stub: TaskServiceAsyncStub, *, poll_s: float = 0.01, timeout_s: float = 600) -> float:
    """Wait until every accepted task has completed, durably; return the monotonic time that was seen.

    GetStats (memory only, cheap) is polled until nothing is queued or running; then ListExecutions,
    which reads committed rows only, confirms that no execution is still active.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await stub.GetStats(tpb.GetStatsRequest(), timeout=30)
        if stats.queue.size == 0 and stats.in_flight == 0 and not await active_count(stub):
            return monotonic_s()
        if time.monotonic() > deadline:
            raise TimeoutError(f"tasks still active after {timeout_s}s: {stats}")
        await asyncio.sleep(poll_s)


async def pace(rate: float, count: int, action: Callable[[int], Coroutine[Any, Any, None]]) -> list[float]:
    """Start `action(i)` at `rate` per second (open loop: a slow action never delays the next start).

    Returns how late each start was against its schedule, in seconds.
    """
    running: list[asyncio.Task[None]] = []
    lags: list[float] = []
    start = monotonic_s() + 0.01
    for index in range(count):
        due = start + index / rate
        delay = due - monotonic_s()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, monotonic_s() - due))
        running.append(asyncio.create_task(action(index)))
    await asyncio.gather(*running)
    return lags
