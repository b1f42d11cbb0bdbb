"""The peers taskwire is compared with, each run the same way, from its own virtualenv.

A peer is its broker or database (started here, durable), 2 worker processes (as many as taskwire's
workers) and bench/peer_driver.py as its client. Each run starts a fresh system and measures, in order:

- ``single``: `tasks_peer` no-op tasks, one submit each from `submit_callers` threads, end to end;
  with the CPU of every process of the peer (broker or database, workers, client) per task;
- ``batched``: the same count through the peer's batch call, `batch_size` a call, `batches_in_flight`
  calls at once;
- ``latency``: submits paced at the first rate of scenario 2; the submit call's time (the peer's
  durable acknowledgement) and submit → handler start, p50 and p99;
- ``cancel``: where the peer can abort a running task, `cancel_samples` aborts, one at a time: the
  abort call → the moment the running handler sees it, p50 and p99.

The figures have the same keys for every peer, so bench/targets.py can take the best of them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench._common import REPO, Bench, ScenarioResult, free_port, percentile
from bench.peer_driver import RESULT_PREFIX
from tests.harness import Process, spawn

__all__ = ["Peer", "System", "redis", "redis_system", "run_peer", "worker"]


@dataclass
class System:
    """A running peer: what its processes need in their environment, and the roots of its process trees."""

    env: dict[str, str]
    pids: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    name: str
    title: str
    label: str  # e.g. "Dramatiq + Redis", in figure labels and the side-by-side table
    venv: str  # directory under bench/, created by `make bench-deps`
    adapter: str  # the module bench/peer_driver.py imports
    commands: tuple[str, ...]  # system programs it needs
    can_abort: bool
    start: Callable[[Bench, Peer], contextlib.AbstractContextManager[System]]
    client_env: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def python(self) -> str:
        return str(REPO / "bench" / self.venv / "bin" / "python")

    def missing(self) -> str:
        """Why the peer cannot run here, or "" when it can."""
        for command in self.commands:
            if shutil.which(command) is None:
                return f"{command} is not installed (make bench-deps)"
        if not (REPO / "bench" / self.venv / "bin" / "python").exists():
            return f"bench/{self.venv} does not exist (make bench-deps)"
        return ""


def worker(peer: Peer, args: list[str], env: Mapping[str, str]) -> Process:
    """A process of the peer (a worker, usually), from its virtualenv, at the repository root."""
    return spawn([peer.python, *args], env={"PYTHONPATH": str(REPO), **env}, cwd=REPO)


@contextlib.contextmanager
def redis(bench: Bench) -> Iterator[tuple[Process, str]]:
    """Debian's redis-server on a free loopback port, append-only file fsynced on every write."""
    port = free_port()
    directory = bench.scratch("redis")
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    process = spawn(args, cwd=directory)
    try:
        process.wait_for_line("Ready to accept connections")
        yield process, f"redis://127.0.0.1:{port}"
    finally:
        process.stop()


@contextlib.contextmanager
def redis_system(bench: Bench, peer: Peer, args: list[str], ready: Callable[[Process], object]) -> Iterator[System]:
    """A Redis as `redis` starts it and the peer's worker (`args`, from its virtualenv), once `ready` returns."""
    with redis(bench) as (server, url):
        env = {"BENCH_REDIS_URL": url}
        process = worker(peer, args, env)
        try:
            ready(process)
            yield System(env=env, pids=[server.popen.pid, process.popen.pid])
        finally:
            process.stop()


def _drive(bench: Bench, peer: Peer, system: System, mode: str, *args: str) -> dict[str, Any]:
    pids = [part for pid in system.pids for part in ("--pid", str(pid))]
    command = [peer.python, "-m", "bench.peer_driver", "--adapter", peer.adapter, "--mode", mode, *args, *pids]
    env = {"PYTHONPATH": str(REPO), **system.env, **peer.client_env}
    driver = spawn(command, env=env, cwd=REPO)
    try:
        line = driver.wait_for_line(RESULT_PREFIX + ".*", timeout_s=900).group(0)
        driver.wait()
    finally:
        driver.kill()
    out: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
    return out


def _one_run(bench: Bench, peer: Peer, result: ScenarioResult) -> None:
    sizes = bench.sizes
    tasks = sizes.tasks_peer
    label = peer.label
    with peer.start(bench, peer) as system:
        for way, args in (
            ("single", ["--count", str(tasks), "--callers", str(sizes.submit_callers)]),
            (
                "batched",
                ["--count", str(tasks), "--callers", str(sizes.batches_in_flight), "--batch", str(sizes.batch_size)],
            ),
        ):
            out = _drive(bench, peer, system, way, *args)
            done = out["tasks"]  # batched: whole batches, so a count that is not a multiple rounds up
            how = "one submit per task" if way == "single" else f"batches of {sizes.batch_size}"
            result.add(f"{way}.tasks_per_s", f"{label}, {how}: end to end", "tasks/s", done / out["total_s"])
            result.add(f"{way}.submit_per_s", f"{label}, {how}: submits accepted", "tasks/s", done / out["submit_s"])
            result.add(
                f"{way}.cpu_per_task",
                f"{label}, {how}: CPU per task, every process of the peer",
                "µs",
                1e6 * out["cpu_s"] / done,
            )
            result.details.setdefault("batch_api", out["batch_api"])
        rate, seconds = sizes.latency[0]
        directory = bench.scratch(f"{peer.name}-latency")
        out = _drive(
            bench, peer, system, "latency", "--rate", str(rate), "--seconds", str(seconds), "--dir", str(directory)
        )
        for q in (50, 99):
            result.add(
                f"{rate}.ack_p{q}",
                f"{label}, at {rate}/s: submit call p{q} (durable)",
                "ms",
                percentile(out["ack_ms"], q),
            )
        for q in (50, 99):
            result.add(
                f"{rate}.start_p{q}",
                f"{label}, at {rate}/s: submit → handler start p{q}",
                "ms",
                percentile(out["start_ms"], q),
            )
        if peer.can_abort:
            directory = bench.scratch(f"{peer.name}-cancel")
            out = _drive(bench, peer, system, "cancel", "--count", str(sizes.cancel_samples), "--dir", str(directory))
            for q in (50, 99):
                result.add(
                    f"abort_p{q}",
                    f"{label}: cancel → abort seen by the handler p{q}",
                    "ms",
                    percentile(out["abort_ms"], q),
                )


def run_peer(bench: Bench, peer: Peer) -> ScenarioResult:
    sizes = bench.sizes
    result = ScenarioResult(name=peer.name, title=peer.title)
    reason = peer.missing()
    if reason:
        result.skipped = reason
        return result
    result.params = {
        "tasks": sizes.tasks_peer,
        "callers": sizes.submit_callers,
        "batch_size": sizes.batch_size,
        "batches_in_flight": sizes.batches_in_flight,
        "worker_processes": sizes.workers,
        "latency_rate": sizes.latency[0][0],
        "cancel_samples": sizes.cancel_samples if peer.can_abort else 0,
    }
    for number in range(1, bench.runs + 1):
        bench.log(f"{peer.name} run {number}/{bench.runs}: {sizes.tasks_peer:,} tasks each way, paced submits, aborts")
        _one_run(bench, peer, result)
    result.notes += list(peer.notes)
    result.notes.append(f"batched: {result.details.get('batch_api', 'n/a')}")
    if not peer.can_abort:
        result.notes.append("cancel → abort: n/a, the peer cannot abort a running task")
    return result
