"""The peer: Celery with a Redis broker and result backend (bench/peers.py runs it).

Each run starts its own ``redis-server`` (Debian's package) on 127.0.0.1 at a free port with a scratch
directory, append-only file with ``appendfsync always`` (an acknowledged task is on disk, as in
taskwire), and one Celery worker (prefork pool, concurrency = the number of taskwire-worker
processes). The client is bench/peer_driver.py with bench/celery_tasks.py, from bench/.venv-celery.
"""

from __future__ import annotations

import contextlib

from bench._common import Bench, ScenarioResult
from bench.peers import Peer, System, redis_system, run_peer

NAME = "celery"
TITLE = "Peer: Celery + Redis (appendfsync always), no-op task"
READY = "bench-celery-worker-ready"  # what bench/celery_tasks.py prints (it imports Celery)


def _start(bench: Bench, peer: Peer) -> contextlib.AbstractContextManager[System]:
    args = ["-m", "celery", "-A", "bench.celery_tasks", "worker", "--pool", "prefork"]
    args += ["--concurrency", str(bench.sizes.workers), "--loglevel", "WARNING"]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return redis_system(bench, peer, args, lambda process: process.wait_for_line(READY, timeout_s=120))


PEER = Peer(
    name=NAME,
    title=TITLE,
    label="Celery + Redis",
    venv=".venv-celery",
    adapter="bench.celery_tasks",
    commands=("redis-server",),
    can_abort=True,
    start=_start,
    notes=(
        "celery worker --pool prefork --concurrency 2 --without-gossip --without-mingle --without-heartbeat; "
        "Redis with appendonly yes, appendfsync always; results collected with ResultSet.join_native; "
        "abort: revoke(terminate=True, signal=SIGUSR1), caught in the task",
    ),
)


def run(bench: Bench) -> ScenarioResult:
    return run_peer(bench, PEER)


__all__ = ["NAME", "PEER", "TITLE", "run"]
