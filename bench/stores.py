"""Scenario 8: the same server on SQLite and on PostgreSQL, and one, two and three active replicas on one
PostgreSQL database: no-op throughput, dispatch latency and durable acknowledgement, with the database's CPU
beside each.

Each run starts one server on a fresh SQLite file (WAL, synchronous=FULL, as shipped), one on a fresh
database of a PostgreSQL cluster started for the scenario from the system's binaries (PostgreSQL's own
durable defaults: fsync on, synchronous_commit on), and then 1, 2 and 3 `--replica` servers on a fresh
database each, with the same worker slots in all (spread one worker per replica, round robin, when there
are more replicas than workers; the submitters spread over the replicas too). For each:

- batched no-op tasks end to end (as scenario 1b): tasks/s;
- paced submits (as scenario 2, the first rate): submit → handler start and the durable acknowledgement
  (the SDK's submit call), p50 and p99;
- the database's CPU over the throughput measurement (100 = one core): SQLite's writer process, or
  every process of the PostgreSQL cluster (read from /proc/<pid>/stat), beside the server's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence

from bench import cancel, latency
from bench._common import Bench, Running, ScenarioResult, percentile, taskwire
from bench._processes import CHILD_ENV, HANDLER_MODULES, process_tree
from bench.throughput import batched_end_to_end
from tests.harness import Cluster
from tests.postgres import PostgresCluster

NAME = "stores"
TITLE = "8. SQLite vs PostgreSQL, one server and 1/2/3 replicas: no-op throughput and dispatch latency, database CPU"
# How many replicas the replica kinds run.
REPLICA_COUNTS = (1, 2, 3)
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


@contextlib.contextmanager
def _replicas(bench: Bench, cluster: PostgresCluster, count: int) -> Iterator[tuple[list[str], list[int]]]:
    """`count` replicas on a fresh database, the bench's worker slots spread over them; yields their addresses
    and their servers' pids."""
    sizes = bench.sizes
    url = cluster.new_database()
    procs = Cluster(bench.scratch("replicas"), store_url=lambda _name: url)
    try:
        servers = [procs.server("--replica", f"r{number}") for number in range(1, count + 1)]
        workers = max(sizes.workers, count)
        slots = max(1, sizes.workers * sizes.worker_slots // workers)
        for index in range(workers):
            server = servers[index % count]
            procs.worker(server, handlers=HANDLER_MODULES, slots=slots, name=f"bench-worker-{index}", env=CHILD_ENV)
        yield [server.address for server in servers], [server.process.popen.pid for server in servers]
    finally:
        procs.close()


async def _spread(addresses: Sequence[str], bench: Bench) -> tuple[float, float]:
    """Batched end to end, the tasks split over the replicas' submitters; (first submit, all done)."""
    sizes = bench.sizes
    share = sizes.tasks_batched // len(addresses)
    runs = await asyncio.gather(
        *(
            batched_end_to_end(
                address,
                tasks=share,
                batch_size=sizes.batch_size,
                in_flight=max(1, sizes.batches_in_flight // len(addresses)),
            )
            for address in addresses
        )
    )
    return min(run[0] for run in runs), max(run[2] for run in runs)


def _measure(bench: Bench, result: ScenarioResult, kind: str, cluster: PostgresCluster | None) -> None:
    url = cluster.new_database() if cluster is not None else ""
    with taskwire(bench, workers=bench.sizes.workers, slots=bench.sizes.worker_slots, store_url=url) as running:
        _measure_running(
            bench,
            result,
            kind,
            [running.address],
            [running.server_pid],
            lambda: _database_pids(running, cluster),
        )


def _measure_replicas(bench: Bench, result: ScenarioResult, count: int, cluster: PostgresCluster) -> None:
    with _replicas(bench, cluster, count) as (addresses, pids):
        _measure_running(bench, result, f"replicas_{count}", addresses, pids, cluster.backend_pids)


def _measure_running(
    bench: Bench,
    result: ScenarioResult,
    kind: str,
    addresses: Sequence[str],
    server: list[int],
    database_pids: Callable[[], list[int]],
) -> None:
    sizes = bench.sizes
    database_before = proc_cpu_seconds(database_pids())
    server_before = proc_cpu_seconds(server)
    first, done = asyncio.run(_spread(addresses, bench))
    wall = done - first
    database = proc_cpu_seconds(database_pids()) - database_before
    result.add(
        f"{kind}.tasks_per_s",
        f"{kind}: batched no-op tasks end to end",
        "tasks/s",
        len(addresses) * (sizes.tasks_batched // len(addresses)) / wall,
    )
    result.add(f"{kind}.database_cpu", f"{kind}: the database's CPU (100 = one core)", "%", 100 * database / wall)
    result.add(
        f"{kind}.server_cpu",
        f"{kind}: taskwire-server CPU, without the database",
        "%",
        100 * (proc_cpu_seconds(server) - server_before) / wall,
    )
    rate, seconds = sizes.latency[0]
    samples, _lags, failures = asyncio.run(latency._paced(addresses[0], rate=rate, seconds=seconds))
    to_start = [1000 * (sample.started_s - sample.sent_s) for sample in samples]
    to_answer = [1000 * (sample.answered_s - sample.sent_s) for sample in samples]
    for q in (50, 99):
        result.add(
            f"{kind}.start_p{q}", f"{kind}: at {rate}/s, submit → handler start p{q}", "ms", percentile(to_start, q)
        )
    for q in (50, 99):
        result.add(
            f"{kind}.ack_p{q}",
            f"{kind}: at {rate}/s, durable acknowledgement (SDK submit returns) p{q}",
            "ms",
            percentile(to_answer, q),
        )
    if failures:
        result.notes.append(f"{kind}, at {rate}/s: {dict(failures)}")
    if len(addresses) > 1:
        # The cancel asked of another replica than the one the task was submitted to (and runs on, mostly).
        measured = asyncio.run(
            cancel._cancels(addresses[0], samples=20, directory=bench.scratch("cancels"), cancel_address=addresses[1])
        )
        for q in (50, 99):
            result.add(
                f"{kind}.cancel_abort_p{q}",
                f"{kind}: cancel asked of another replica → abort signal p{q}",
                "ms",
                percentile([pair[0] for pair in measured], q),
            )


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
            for count in REPLICA_COUNTS:
                bench.log(f"{NAME} run {number}/{bench.runs}: {count} replicas")
                _measure_replicas(bench, result, count, cluster)
    finally:
        cluster.stop()
    result.notes.append(
        "one server each, same workers; PostgreSQL runs on this machine from the system's binaries with its "
        "durable defaults (fsync, synchronous_commit on); database CPU: SQLite's writer process, or every "
        "process of the PostgreSQL cluster"
    )
    return result


__all__ = ["NAME", "TITLE", "proc_cpu_seconds", "run"]
