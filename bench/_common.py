"""What every scenario shares: sizes, statistics, tables and the JSON results; with the real processes
(`bench._processes`) and the gRPC clients (`bench._clients`) it uses, re-exported here.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

from bench._clients import (
    active_count,
    channel,
    describe_unsuccessful,
    echo_execution,
    echo_input,
    pace,
    sdk_client,
    task_stub,
    unsuccessful_count,
    wait_drained,
)
from bench._processes import (
    REPO,
    RssSampler,
    Running,
    cpu_seconds,
    free_port,
    rss_bytes,
    spawn_module,
    taskwire,
)
from bench.handlers import monotonic_s
from tests.harness import wait_for

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
    "echo_input",
    "fmt",
    "free_port",
    "monotonic_s",
    "pace",
    "percentile",
    "render_table",
    "rss_bytes",
    "sdk_client",
    "spawn_module",
    "task_stub",
    "taskwire",
    "unsuccessful_count",
    "wait_drained",
    "wait_for",
]

RESULTS_DIR = REPO / "bench" / "results"
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizes:
    """How much work each scenario does. FULL is what `make bench` runs; QUICK is a smoke test."""

    tasks_single: int  # scenario 1a: one submit per task (through the SDK, and as unary SubmitExecution calls)
    tasks_batched: int  # scenario 1b: SubmitExecutions in batches
    tasks_peer: int  # each peer (Celery, Dramatiq, procrastinate), each way
    submit_callers: int  # concurrent one-submit-per-task callers, and callers of the bare unary and multiplexed echo
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
