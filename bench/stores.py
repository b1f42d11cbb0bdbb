"""Scenario 8: the same server on SQLite and on PostgreSQL: no-op throughput, dispatch latency and durable
acknowledgement, with the database's CPU beside each.

Each run starts one server on a fresh SQLite file (WAL, synchronous=FULL, as shipped) and one on a fresh
database of a PostgreSQL cluster started for the scenario from the system's binaries (PostgreSQL's own
durable defaults: fsync on, synchronous_commit on), with the same workers. For each:

- batched no-op tasks end to end (as scenario 1b): tasks/s;
- paced submits (as scenario 2, the first rate): submit → handler start and the durable acknowledgement
  (the SubmitExecution call), p50 and p99;
- the database's CPU over the throughput measurement (100 = one core): SQLite's writer process, or
  every process of the PostgreSQL cluster (read from /proc/<pid>/stat), beside the server's own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from bench import latency
from bench._common import Bench, Running, ScenarioResult, percentile, taskwire
from bench._processes import process_tree
from bench.throughput import batched_end_to_end
from tests.postgres import PostgresCluster

NAME = "stores"
TITLE = "8. SQLite vs PostgreSQL: no-op throughput and dispatch latency, with the database's CPU"
_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of processes, from /proc/<pid>/stat (fields 14 and 15, in clock ticks)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a backend that ended: its time is gone with it
        total += int(fields[11]) + int(fields[12])  # utime, stime (after the name: field 3 is fields[0])
    return total / _TICKS


def _database_pids(running: Running, cluster: PostgresCluster | None) -> list[int]:
    if cluster is not None:
        return cluster.backend_pids()
    return [process.pid for process in process_tree(running.server_pid)[1:]]  # the SQLite writer process


def _measure(bench: Bench, result: ScenarioResult, kind: str, cluster: PostgresCluster | None) -> None:
    sizes = bench.sizes
    url = cluster.new_database() if cluster is not None else ""
    with taskwire(bench, workers=sizes.workers, slots=sizes.worker_slots, store_url=url) as running:
        server = [running.server_pid]
        database_before = proc_cpu_seconds(_database_pids(running, cluster))
        server_before = proc_cpu_seconds(server)
        first, _submitted, done = asyncio.run(
            batched_end_to_end(
                running.address,
                tasks=sizes.tasks_batched,
                batch_size=sizes.batch_size,
                in_flight=sizes.batches_in_flight,
            )
        )
        wall = done - first
        database = proc_cpu_seconds(_database_pids(running, cluster)) - database_before
        result.add(
            f"{kind}.tasks_per_s", f"{kind}: batched no-op tasks end to end", "tasks/s", sizes.tasks_batched / wall
        )
        result.add(f"{kind}.database_cpu", f"{kind}: the database's CPU (100 = one core)", "%", 100 * database / wall)
        result.add(
            f"{kind}.server_cpu",
            f"{kind}: taskwire-server CPU, without the database",
            "%",
            100 * (proc_cpu_seconds(server) - server_before) / wall,
        )
        rate, seconds = sizes.latency[0]
        samples, _lags, failures = asyncio.run(latency._paced(running.address, rate=rate, seconds=seconds))
        to_start = [1000 * (sample.started_s - sample.sent_s) for sample in samples]
        to_answer = [1000 * (sample.answered_s - sample.sent_s) for sample in samples]
        for q in (50, 99):
            result.add(
                f"{kind}.start_p{q}", f"{kind}: at {rate}/s, submit → handler start p{q}", "ms", percentile(to_start, q)
            )
        for q in (50, 99):
            result.add(
                f"{kind}.ack_p{q}",
                f"{kind}: at {rate}/s, durable acknowledgement (SubmitExecution call) p{q}",
                "ms",
                percentile(to_answer, q),
            )
        if failures:
            result.notes.append(f"{kind}, at {rate}/s: {dict(failures)}")


def run(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    result = ScenarioResult(name=NAME, title=TITLE)
    result.params = {
        "tasks_batched": sizes.tasks_batched,
        "batch_size": sizes.batch_size,
        "latency_rate": sizes.latency[0][0],
        "workers": sizes.workers,
        "slots_per_worker": sizes.worker_slots,
    }
    cluster = PostgresCluster.start(durable=True)
    try:
        for number in range(1, bench.runs + 1):
            for kind in ("sqlite", "postgresql"):
                bench.log(f"{NAME} run {number}/{bench.runs}: {kind}")
                _measure(bench, result, kind, cluster if kind == "postgresql" else None)
    finally:
        cluster.stop()
    result.notes.append(
        "one server each, same workers; PostgreSQL runs on this machine from the system's binaries with its "
        "durable defaults (fsync, synchronous_commit on); database CPU: SQLite's writer process, or every "
        "process of the PostgreSQL cluster"
    )
    return result


__all__ = ["NAME", "TITLE", "proc_cpu_seconds", "run"]
