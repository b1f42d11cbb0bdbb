"""The peer: Celery with a Redis broker and result backend, the same no-op task, the same count.

Each run starts its own ``redis-server`` (Debian's package) on 127.0.0.1 at a free port with a scratch
directory, one Celery worker (prefork pool, concurrency = the number of taskwire-worker processes),
then the producer in bench/celery_tasks.py: N ``.delay()`` calls, then wait for every result. The rate
is N / (last result − first send). Everything runs from bench/.venv-peers (``make bench-deps``).

Redis runs with its default persistence (periodic snapshots, no append-only file), so, unlike
taskwire, an acknowledged task is not fsynced: the comparison flatters the peer on durability.
"""

from __future__ import annotations

import json
import shutil

from bench._common import REPO, Bench, ScenarioResult, free_port
from tests.harness import Process, spawn

NAME = "celery"
TITLE = "Peer: Celery + Redis, no-op task, end to end"
PEERS_PYTHON = REPO / "bench" / ".venv-peers" / "bin" / "python"
# What bench/celery_tasks.py prints (it imports Celery, so it cannot be imported here).
READY = "bench-celery-worker-ready"
RESULT_PREFIX = "celery-peer: "


def missing() -> str:
    """Why the peer cannot run here, or "" when it can."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (make bench-deps)"
    if not PEERS_PYTHON.exists():
        return f"{PEERS_PYTHON.relative_to(REPO)} does not exist (make bench-deps)"
    return ""


def _redis(bench: Bench) -> tuple[Process, str]:
    port = free_port()
    directory = bench.scratch("redis")
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    process = spawn(args, cwd=directory)
    try:
        process.wait_for_line("Ready to accept connections")
    except BaseException:
        process.kill()
        raise
    return process, f"redis://127.0.0.1:{port}"


def _one_run(bench: Bench, tasks: int) -> dict[str, float]:
    redis, url = _redis(bench)
    env = {"BENCH_REDIS_URL": url, "PYTHONPATH": str(REPO)}
    worker: Process | None = None
    try:
        worker = spawn(
            [
                str(PEERS_PYTHON),
                "-m",
                "celery",
                "-A",
                "bench.celery_tasks",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(bench.sizes.workers),
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env=env,
            cwd=REPO,
        )
        worker.wait_for_line(READY, timeout_s=120)
        producer = spawn([str(PEERS_PYTHON), "-m", "bench.celery_tasks", "--count", str(tasks)], env=env, cwd=REPO)
        line = producer.wait_for_line(RESULT_PREFIX + ".*", timeout_s=900).group(0)
        producer.wait()
        timings: dict[str, float] = json.loads(line[len(RESULT_PREFIX) :])
        return timings
    finally:
        if worker is not None:
            worker.stop()
        redis.stop()


def run(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    result = ScenarioResult(name=NAME, title=TITLE)
    reason = missing()
    if reason:
        result.skipped = reason
        return result
    result.params = {"tasks": sizes.tasks_peer, "worker_processes": sizes.workers, "pool": "prefork"}
    for number in range(1, bench.runs + 1):
        bench.log(f"{NAME} run {number}/{bench.runs}: {sizes.tasks_peer:,} .delay() then wait for all results")
        timings = _one_run(bench, sizes.tasks_peer)
        result.add("tasks_per_s", "Celery + Redis: end to end", "tasks/s", sizes.tasks_peer / timings["total_s"])
        result.add("send_per_s", "Celery + Redis: .delay() calls", "tasks/s", sizes.tasks_peer / timings["send_s"])
    result.notes.append(
        f"celery worker --pool prefork --concurrency {sizes.workers} --without-gossip --without-mingle "
        "--without-heartbeat; results collected with ResultSet.join_native; Redis default persistence (no fsync)"
    )
    return result


__all__ = ["NAME", "TITLE", "missing", "run"]
