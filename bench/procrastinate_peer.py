"""The peer: procrastinate on PostgreSQL (bench/peers.py runs it).

Each run starts a PostgreSQL cluster from the system's binaries with its durable defaults (fsync and
synchronous_commit on, as the stores scenario does), applies procrastinate's schema to a fresh
database, and starts 2 ``procrastinate worker`` processes with `CONCURRENCY` async jobs each (jobs
announced by LISTEN/NOTIFY). procrastinate keeps no results: a set of tasks has completed when all of
its jobs are ``succeeded`` in ``procrastinate_jobs``, which the client polls every 10 ms. The client is
bench/peer_driver.py with bench/peer_procrastinate.py, from bench/.venv-procrastinate.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from bench._common import Bench, ScenarioResult
from bench.peers import Peer, System, run_peer, worker
from tests.postgres import PostgresCluster

NAME = "procrastinate"
TITLE = "Peer: procrastinate + PostgreSQL (fsync on), no-op task"
CONCURRENCY = 10
_APP = "--app=bench.peer_procrastinate.app"


@contextlib.contextmanager
def _start(bench: Bench, peer: Peer) -> Iterator[System]:
    cluster = PostgresCluster.start(durable=True)
    workers = []
    try:
        env = {"BENCH_PG_URL": cluster.new_database()}
        schema = worker(peer, ["-m", "procrastinate", _APP, "schema", "--apply"], env)
        if schema.wait(timeout_s=120) != 0:
            raise subprocess.SubprocessError(f"procrastinate schema --apply failed:\n{schema.output}")
        for _ in range(bench.sizes.workers):
            process = worker(peer, ["-m", "procrastinate", _APP, "worker", "--concurrency", str(CONCURRENCY)], env)
            workers.append(process)
            process.wait_for_line("Starting worker", timeout_s=120)
        assert cluster.process is not None
        yield System(env=env, pids=[cluster.process.pid, *(process.popen.pid for process in workers)])
    finally:
        for process in workers:
            process.stop()
        cluster.stop()


PEER = Peer(
    name=NAME,
    title=TITLE,
    label="procrastinate + PostgreSQL",
    venv=".venv-procrastinate",
    adapter="bench.peer_procrastinate",
    commands=(),
    can_abort=True,
    start=_start,
    client_env={"BENCH_PROCRASTINATE_CLIENT": "1"},
    notes=(
        f"2 × procrastinate worker --concurrency {CONCURRENCY} (async tasks, LISTEN/NOTIFY); PostgreSQL with "
        "fsync and synchronous_commit on; no result backend: end to end = every job 'succeeded' in "
        "procrastinate_jobs, polled every 10 ms; abort: cancel_job_by_id(abort=True), the worker cancels the "
        "job's asyncio task",
    ),
)


def run(bench: Bench) -> ScenarioResult:
    return run_peer(bench, PEER)


__all__ = ["NAME", "PEER", "TITLE", "run"]
